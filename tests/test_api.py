"""The top-level API: vqcli.compress / decompress / info, lazy imports, docs/API.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image
from typer.testing import CliRunner

import vqcli
from vqcli.cli import app
from vqcli.errors import UsageError, VQError, cli_message
from vqcli.rate import RATE_PARAMS

ROOT = Path(__file__).resolve().parent.parent


def test_import_is_lazy_and_torch_free() -> None:
    code = ("import sys, vqcli\n"
            "assert 'torch' not in sys.modules and 'vqcli.api' not in sys.modules\n"
            "assert set(vqcli.__all__) <= set(dir(vqcli))\n"
            "print(vqcli.info.__module__)\n"
            "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "vqcli.api"
    with pytest.raises(AttributeError):
        vqcli.nothing_here  # noqa: B018


def test_every_input_kind_gives_the_same_file(tiny_weights: Path, tmp_path: Path) -> None:
    rgb = make_image(40, 56, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    by_array = vqcli.compress(rgb, weights=tiny_weights, device="cpu")
    assert vqcli.compress(Image.fromarray(rgb), weights=tiny_weights, device="cpu") == by_array
    assert vqcli.compress(tmp_path / "a.png", weights=tiny_weights, device="cpu") == by_array
    assert vqcli.compress(str(tmp_path / "a.png"), weights=tiny_weights, device="cpu") == by_array
    out = vqcli.decompress(by_array, weights=tiny_weights, device="cpu")
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (56, 40)


def test_grey_and_alpha_arrays(tiny_weights: Path) -> None:
    rgb = make_image(32, 48, 4)
    kw = {"weights": tiny_weights, "device": "cpu"}
    grey = vqcli.decompress(vqcli.compress(rgb[:, :, 1], **kw), **kw)
    assert grey.mode == "L" and grey.size == (48, 32)
    alpha = np.tile(np.arange(48, dtype=np.uint8) * 5, (32, 1))
    rgba = vqcli.decompress(vqcli.compress(np.dstack([rgb, alpha]), **kw), **kw)
    assert rgba.mode == "RGBA" and (np.asarray(rgba)[:, :, 3] == alpha).all()
    with pytest.raises(UsageError, match="uint8"):
        vqcli.compress(rgb.astype(np.float32), **kw)
    with pytest.raises(UsageError, match=r"\[32, 48, 2\]"):
        vqcli.compress(rgb[:, :, :2], **kw)
    with pytest.raises(UsageError, match="got int"):
        vqcli.compress(3, **kw)


def test_rate_stages_and_info(tiny_weights: Path, tmp_path: Path) -> None:
    from vqcli.weights import load_weights

    w = load_weights(tiny_weights, "cpu")
    rgb = make_image(48, 64, 5)
    # effort 0: greedy codes, so that stage 1 of three stages is the one-stage file (a search to
    # depth 3 may pick another first code for a better path)
    one, three = (vqcli.compress(rgb, stages=n, weights=w, effort=0) for n in (1, 3))
    assert len(one) < len(three)
    assert vqcli.info(one)["stages_present"] == 1 and vqcli.info(three)["stages_present"] == 3
    (tmp_path / "x.vqz").write_bytes(three)
    assert vqcli.info(tmp_path / "x.vqz")["bytes"] == len(three)
    prefix = vqcli.decompress(tmp_path / "x.vqz", stages=1, weights=w)
    assert prefix.tobytes() == vqcli.decompress(one, weights=w).tobytes()
    with pytest.raises(UsageError) as e:
        vqcli.compress(rgb, stages=1, psnr=30, weights=w)
    assert str(e.value) == "choose at most one of stages, quality, bpp and psnr" and "--" not in str(e.value)
    with pytest.raises(UsageError, match="^stages 9: the model has stages 1 to 3$"):
        vqcli.compress(rgb, stages=9, weights=w)
    # stages is "at most": a file holding fewer decodes all it holds.
    assert vqcli.decompress(one, stages=2, weights=w).tobytes() == vqcli.decompress(one, weights=w).tobytes()
    with pytest.raises(UsageError, match="^stages 0: must be at least 1$"):
        vqcli.decompress(one, stages=0, weights=w)
    with pytest.raises(VQError, match="no such file"):
        vqcli.decompress(tmp_path / "missing.vqz", weights=w)


def test_model_cache_and_lookup_by_model_id(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = vqcli.load_model(tiny_weights, "cpu")
    assert vqcli.load_model(str(tiny_weights), "cpu") is a
    assert vqcli.load_model(a) is a
    data = vqcli.compress(make_image(24, 32, 6), weights=a)
    with pytest.raises(VQError, match=f"made with model {a.model_id}, and no weights of that id were found"):
        vqcli.decompress(data)  # not a shipped model
    monkeypatch.setenv("VQ_WEIGHTS_PATH", str(tiny_weights.parent))
    assert vqcli.decompress(data, device="cpu").size == (32, 24)  # found by its id


def test_cli_names_flags_where_the_library_names_parameters(tiny_weights: Path, tmp_path: Path) -> None:
    assert cli_message(UsageError("choose at most one of stages, quality, bpp and psnr", params=RATE_PARAMS)) \
        == "choose at most one of --stages, --quality, --bpp and --psnr"
    assert cli_message(VQError("stages.vqz: stages 4, but", params=("stages",))) == "stages.vqz: --stages 4, but"
    assert cli_message(VQError("msssim_weight needs crop >= 176", params=("msssim_weight", "crop"))) \
        == "--msssim-weight needs --crop >= 176"
    src = tmp_path / "a.png"
    Image.fromarray(make_image(24, 32, 7)).save(src)
    r = CliRunner().invoke(app, ["compress", str(src), "--weights", str(tiny_weights), "--stages", "1",
                                 "--bpp", "1", "--device", "cpu"])
    assert r.exit_code == 2 and "choose at most one of --stages, --quality, --bpp and --psnr" in r.output
    r = CliRunner().invoke(app, ["compress", str(src), "--weights", str(tiny_weights), "--stages", "7",
                                 "--device", "cpu"])
    assert r.exit_code == 2 and "--stages 7: the model has stages 1 to 3" in r.output


def test_api_md_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of docs/API.md, in order, in one namespace, beside a photo.png."""
    with Image.open(ROOT / "docs" / "sample" / "ladybird.jpg") as im:
        im.convert("RGB").crop((300, 150, 492, 278)).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "API.md").read_text(), re.S)
    assert len(blocks) >= 6
    ns: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/API.md block {i + 1}", "exec"), ns)
    assert isinstance(ns["image"], Image.Image) and ns["meta"]["stages_present"] == 8


def test_readme_shows_the_api_first() -> None:
    """The first code block after the set-up section is the 3-line API."""
    text = (ROOT / "README.md").read_text()
    setup = text.index("## Set-up")
    after_setup = text[text.index("\n## ", setup + 1):]
    first = re.search(r"```(\w*)\n(.*?)```", after_setup, re.S)
    assert first is not None and first.group(1) == "python"
    body = [line for line in first.group(2).splitlines() if line.strip()]
    assert body[0] == "import vqcli" and len(body) == 3
    ns: dict = {}
    exec(compile(body[0], "README", "exec"), ns)
    assert all(name in ns["vqcli"].__all__ for name in re.findall(r"vqcli\.(\w+)\(", first.group(2)))
