"""The Pillow plugin: Image.open / Image.save of .vqz files after `import vqcli`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image, UnidentifiedImageError

import vqcli
from vqcli.errors import UsageError


@pytest.fixture()
def lookup(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Files made by the tiny weights find them by model id, as files of a user's own model do."""
    monkeypatch.setenv("VQ_WEIGHTS_PATH", str(tiny_weights.parent))
    return tiny_weights


def test_open_reads_the_header_and_decodes_on_load_without_torch_before(lookup: Path, tmp_path: Path) -> None:
    rgb = make_image(40, 56, 11)
    (tmp_path / "a.vqz").write_bytes(vqcli.compress(rgb, stages=2, weights=lookup, device="cpu"))
    code = ("import sys, vqcli\nfrom PIL import Image\n"
            "assert Image.registered_extensions()['.vqz'] == 'VQZ'\n"
            "im = Image.open(sys.argv[1])\n"
            "print(im.format, im.size, im.mode, im.info['stages'])\n"
            "assert 'torch' not in sys.modules, 'torch imported before load()'\n"
            "im.load()\nassert 'torch' in sys.modules\nprint(im.getpixel((0, 0)))\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.vqz")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    first, pixel = r.stdout.splitlines()
    assert first == "VQZ (56, 40) RGB 2"
    ref = vqcli.decompress(tmp_path / "a.vqz", weights=lookup, device="cpu")
    # the subprocess decodes on the default device (auto): the same up to the decoder's float rounding
    assert np.abs(np.array(eval(pixel)) - np.array(ref.getpixel((0, 0)))).max() <= 2


def test_save_and_open_round_trip(lookup: Path, tmp_path: Path) -> None:
    rgb = make_image(48, 64, 12)
    Image.fromarray(rgb).save(tmp_path / "a.vqz", stages=2, weights=lookup, device="cpu")
    assert vqcli.info(tmp_path / "a.vqz")["stages_present"] == 2
    assert (tmp_path / "a.vqz").read_bytes() == vqcli.compress(rgb, stages=2, weights=lookup, device="cpu")
    with Image.open(tmp_path / "a.vqz") as im:
        assert im.format == "VQZ" and im.size == (64, 48) and im.mode == "RGB"
        got = np.asarray(im)
    want = np.asarray(vqcli.decompress(tmp_path / "a.vqz", weights=lookup, device="cpu"))
    assert (got == want).all()
    # a format named explicitly, to a file object; grey and alpha keep their modes
    grey = tmp_path / "g.bin"
    with open(grey, "wb") as f:
        Image.fromarray(rgb[:, :, 0]).save(f, format="VQZ", weights=lookup, device="cpu")
    with Image.open(grey) as im:
        assert im.mode == "L" and np.asarray(im).shape == (48, 64)
    rgba = Image.fromarray(np.dstack([rgb, np.full((48, 64), 77, np.uint8)]))
    rgba.save(tmp_path / "t.vqz", weights=lookup, device="cpu")
    with Image.open(tmp_path / "t.vqz") as im:
        assert im.mode == "RGBA" and im.getchannel("A").getextrema() == (77, 77)


def test_quality_is_vqs_quality(lookup: Path, tmp_path: Path) -> None:
    """save(quality=) is vqcli.compress's quality: the same bytes, and more bytes for more quality."""
    rgb = make_image(32, 48, 13)
    im = Image.fromarray(rgb)
    sizes = []
    for q in (0, 50, 100):
        im.save(tmp_path / f"q{q}.vqz", quality=q, weights=lookup, device="cpu")
        data = (tmp_path / f"q{q}.vqz").read_bytes()
        assert data == vqcli.compress(rgb, quality=q, weights=lookup, device="cpu")
        sizes.append(len(data))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    with pytest.raises(UsageError, match="quality"):
        im.save(tmp_path / "x.vqz", quality=50, stages=2, weights=lookup, device="cpu")
    with pytest.raises(UsageError, match="quality 101"):
        im.save(tmp_path / "y.vqz", quality=101, weights=lookup, device="cpu")


def test_bad_files(lookup: Path, tmp_path: Path) -> None:
    data = vqcli.compress(make_image(32, 40, 14), weights=lookup, device="cpu")
    bad = bytearray(data)
    bad[12] ^= 0xFF  # inside the header: its CRC fails, so Pillow does not take it for a .vqz
    (tmp_path / "bad.vqz").write_bytes(bytes(bad))
    with pytest.raises(UnidentifiedImageError):
        Image.open(tmp_path / "bad.vqz")
    (tmp_path / "cut.vqz").write_bytes(data[:-3])  # header fine, a stage chunk cut short
    with Image.open(tmp_path / "cut.vqz") as im:
        assert im.size == (40, 32)
        with pytest.raises(OSError, match=r"cut\.vqz: truncated"):
            im.load()
