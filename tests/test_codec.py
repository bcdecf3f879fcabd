"""The codec: .vqz container, entropy coding, rate control and the compress/decompress/info CLI."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import decode_with_threads, make_image
from PIL import Image
from typer.testing import CliRunner

from vqcli import format as vqz
from vqcli.cli import app
from vqcli.codec import (
    compress,
    decode_indices,
    decompress,
    default_quality,
    encode_indices,
    entropy_model,
    pack,
)
from vqcli.entropy import build_model, quantize
from vqcli.errors import VQError
from vqcli.images import LoadedImage, decode_image
from vqcli.metrics import psnr
from vqcli.rate import DEFAULT_QUALITY
from vqcli.weights import COUNT_DTYPES, load_weights, model_id_of, read_safetensors, set_default_quality, unpack_counts

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tiny_weights: Path):
    return load_weights(tiny_weights, "cpu")


@pytest.fixture(scope="module")
def static_weights(tiny_weights: Path, tmp_path_factory) -> Path:
    """The tiny weights without the context and spatial statistics (an older weights file)."""
    from safetensors.torch import load, save

    data = tiny_weights.read_bytes()
    meta = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    tensors = unpack_counts(tiny_weights, load(data), meta)  # stored wide, as older files were
    del meta[COUNT_DTYPES]
    for name in ("context", "context_up", "context_left", "context_experts"):
        del tensors[f"stats.{name}"]
    meta["model_id"] = model_id_of(tensors)
    out = tmp_path_factory.mktemp("w") / "static.safetensors"
    out.write_bytes(save(tensors, metadata=meta))
    return out


@pytest.fixture(scope="module")
def vqz_file(weights, tmp_path_factory) -> tuple[Path, np.ndarray]:
    rgb = make_image(45, 70, 3)
    d = tmp_path_factory.mktemp("vqz")
    path = d / "img.vqz"
    path.write_bytes(compress(weights, LoadedImage(rgb, None, "RGB"), stages=3).data)
    return path, rgb


def cli(*args: str, input: bytes | None = None):
    return runner.invoke(app, list(args), input=input)


def assert_one_line_error(result, name: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("vq: error:") and name in err, err
    assert "Traceback" not in result.output


def refresh_header_crc(data: bytearray) -> None:
    n = vqz.HEADER_SIZE - 4
    data[n:n + 4] = struct.pack("<I", zlib.crc32(bytes(data[:n])))


# -- bytes API ----------------------------------------------------------------------------------
def test_round_trip_indices_and_crop(weights):
    rgb = make_image(45, 70, 1)  # not multiples of the factor: padded and cropped back
    idx = encode_indices(weights, rgb)
    assert idx.shape == (3, 6, 9) and idx.dtype == np.int64
    data = pack(weights, idx, 70, 45)
    dec = decompress(weights, data)
    assert dec.rgb.shape == (45, 70, 3) and dec.alpha is None
    assert np.array_equal(dec.indices, idx)
    assert np.array_equal(dec.rgb, decode_indices(weights, idx, 70, 45))
    assert dec.header.padding == (3, 2) and dec.header.entropy == "spatial"  # the strongest the weights carry


def test_default_quality_from_weights(tiny_weights: Path, tmp_path: Path):
    """A release may name its default rate (a quality) in the metadata; compress without a rate
    flag uses it, else rate.DEFAULT_QUALITY (weights without an enhancement layer)."""
    img = LoadedImage(make_image(32, 48, 4), None, "RGB")
    plain = load_weights(tiny_weights)
    assert plain.named_default is None and default_quality(plain) == DEFAULT_QUALITY
    assert compress(plain, img).quality == DEFAULT_QUALITY
    out = tmp_path / "w.safetensors"
    set_default_quality(tiny_weights, 80, out)
    named = load_weights(out)
    assert default_quality(named) == 80 and named.model_id == plain.model_id
    assert compress(named, img).quality == 80 and compress(named, img, stages=3).quality is None
    with pytest.raises(VQError, match="quality 101: expected 0 to 100"):
        set_default_quality(out, 101)
    from safetensors.torch import save

    tensors, meta = read_safetensors(out)
    out.write_bytes(save(tensors, metadata={**meta, "default_quality": "high"}))
    with pytest.raises(VQError, match="bad default_quality 'high'"):
        load_weights(out)


def test_static_fallback(static_weights):
    w = load_weights(static_weights)
    rgb = make_image(40, 40, 2)
    res = compress(w, LoadedImage(rgb, None, "RGB"), stages=3, effort=0)
    assert res.entropy_model == "static"
    assert vqz.read(res.data).header.entropy == "static"
    assert np.array_equal(decompress(w, res.data).indices, encode_indices(w, rgb))


def test_context_model_uses_fewer_bits_than_static_on_train_like_data(weights):
    # Not a quality claim about the tiny model, only that both models code and are compared.
    rgb = make_image(64, 96, 0)
    idx = encode_indices(weights, rgb)
    for kind in ("static", "context", "spatial"):
        em = entropy_model(weights, kind)
        for s in range(3):
            prev = idx[s - 1] if s else None
            assert np.array_equal(em.decode_stage(s, em.encode_stage(s, idx[s], prev), idx[s].shape, prev), idx[s])


@pytest.mark.parametrize("kind", ["static", "context", "spatial"])
def test_coded_size_within_one_percent_of_ideal(weights, kind):
    em = entropy_model(weights, kind)
    rng = np.random.default_rng(0)
    k = em.codebook
    grids = []
    for s in range(3):  # sample from the model itself so that coded ~ ideal is meaningful
        p = em.static[s] / em.total
        grids.append(rng.choice(k, size=(120, 160), p=p))
    coded = ideal = 0.0
    for s, g in enumerate(grids):
        prev = grids[s - 1] if s else None
        coded += 8 * len(em.encode_stage(s, g, prev))
        ideal += em.ideal_bits(s, g, prev)
    assert ideal <= coded <= 1.01 * ideal, (coded, ideal)


def test_quantize_integer_tables():
    f = quantize(np.array([[0, 0, 5, 1000000], [0, 0, 0, 0]]), 1 << 16)
    assert (f.sum(1) == 1 << 16).all() and (f >= 1).all() and f.dtype == np.int64
    assert (f[1] == 1 << 14).all()


def test_tables_every_code_nonzero(weights):
    em = build_model(weights.stats)
    assert (em.static >= 1).all() and (em.context >= 1).all()
    assert (em.static.sum(-1) == em.total).all() and (em.context.sum(-1) == em.total).all()


def test_progressive_prefixes(weights, vqz_file):
    path, rgb = vqz_file
    data = path.read_bytes()
    full = torch.from_numpy(decompress(weights, data).indices)
    c = vqz.read(data)
    end = vqz.HEADER_SIZE
    for k, (_, size) in enumerate(c.chunk_sizes, start=1):
        end += size
        dec = decompress(weights, data[:end])
        assert dec.stages == k and dec.truncated == (k < 3)
        assert np.array_equal(dec.indices, full[:k].numpy())
        assert np.array_equal(dec.rgb, decode_indices(weights, full[:k], 70, 45))
    assert decompress(weights, data, stages=1).stages == 1


def test_rate_control_bpp(weights):
    """--bpp: the highest quality whose file fits (the next quality up does not)."""
    img = LoadedImage(make_image(64, 64, 5), None, "RGB")

    def bpp(q: int) -> float:
        return compress(weights, img, quality=q).bpp

    budget = (bpp(20) + bpp(80)) / 2
    res = compress(weights, img, bpp=budget)
    assert res.bpp <= budget and res.quality is not None and bpp(int(res.quality) + 1) > budget
    assert res.data == compress(weights, img, quality=res.quality).data and res.rate == f"--bpp {budget:g}"
    assert compress(weights, img, bpp=100).quality == 100
    with pytest.raises(VQError, match=r"<input>: even quality 0 needs .* bpp > .*best_effort writes the nearest"):
        compress(weights, img, bpp=bpp(0) / 2)
    low = compress(weights, img, bpp=bpp(0) / 2, best_effort=True)
    assert low.quality == 0 and "even quality 0" in low.note and "used quality 0" in low.note


def test_rate_control_psnr(weights):
    """--psnr: the lowest quality reaching the target (the next quality down does not)."""
    rgb = make_image(64, 64, 6)
    img = LoadedImage(rgb, None, "RGB")

    def quality_psnr(q: int) -> float:
        return psnr(rgb, decompress(weights, compress(weights, img, quality=q).data).rgb)

    target = (quality_psnr(0) + quality_psnr(100)) / 2
    res = compress(weights, img, psnr=target)
    assert quality_psnr(int(res.quality)) >= target > quality_psnr(int(res.quality) - 1)
    assert res.psnr_by_quality and all(0 <= q <= 100 for q in res.psnr_by_quality)
    with pytest.raises(VQError, match="no quality reaches 200 dB"):
        compress(weights, img, psnr=200)
    best = compress(weights, img, psnr=200, best_effort=True)
    assert best.quality == 100 and "no quality reaches" in best.note


def test_decode_identical_across_thread_counts(weights, vqz_file):
    data = vqz_file[0].read_bytes()
    a, b = (decode_with_threads(weights, data, n) for n in (1, 2))
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.rgb, b.rgb)


# -- input modes ----------------------------------------------------------------------------------
def _encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _roundtrip(weights, raw: bytes):
    img = decode_image(raw, "x")
    res = compress(weights, img, stages=3)
    return img, res, decompress(weights, res.data)


def test_rgba_alpha_exact(weights):
    rgb = make_image(40, 50, 7)
    alpha = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    img, res, dec = _roundtrip(weights, _encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA")))
    assert res.mode == "RGBA" and np.array_equal(dec.alpha, alpha)
    assert dec.to_pil().mode == "RGBA"


def test_grey_and_grey_alpha(weights):
    g = make_image(40, 50, 8)[..., 0]
    _, res, dec = _roundtrip(weights, _encode(Image.fromarray(g, "L")))
    assert res.mode == "L" and dec.to_pil().mode == "L" and dec.rgb.shape == (40, 50, 3)
    la = Image.fromarray(g, "L").convert("LA")
    la.putalpha(Image.fromarray((g > 100).astype(np.uint8) * 255, "L"))
    _, res, dec = _roundtrip(weights, _encode(la))
    assert res.mode == "LA" and dec.to_pil().mode == "LA"


def test_palette_16bit_and_exif(weights):
    rgb = make_image(40, 56, 9)
    pal = Image.fromarray(rgb).quantize(32)
    _, res, dec = _roundtrip(weights, _encode(pal))
    assert res.mode == "RGB" and dec.rgb.shape == (40, 56, 3)
    pal.info["transparency"] = 0
    _, res, dec = _roundtrip(weights, _encode(pal, transparency=0))
    assert res.mode == "RGBA" and dec.alpha is not None
    g16 = Image.fromarray(make_image(40, 56, 10)[..., 0].astype(np.uint16) * 257)
    assert g16.mode == "I;16"
    _, res, dec = _roundtrip(weights, _encode(g16))
    assert res.mode == "L" and dec.rgb.shape == (40, 56, 3)
    # Pillow's 32-bit mode "I" often holds 8-bit values: they are kept, not divided by 257.
    grey8 = make_image(40, 56, 10)[..., 0]
    img_i = decode_image(_encode(Image.fromarray(grey8.astype(np.int32), "I"), "TIFF"), "i.tif")
    assert np.array_equal(img_i.rgb[..., 0], grey8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img, res, dec = _roundtrip(weights, _encode(Image.fromarray(rgb), "JPEG", exif=exif.tobytes()))
    assert img.rgb.shape == (56, 40, 3) and dec.rgb.shape == (56, 40, 3)


# -- container errors -------------------------------------------------------------------------------
def test_errors_api(weights, vqz_file):
    data = vqz_file[0].read_bytes()
    with pytest.raises(VQError, match="f.vqz: not a vqz file"):
        vqz.read(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "f.vqz")
    bad = bytearray(data)
    bad[8] = 9
    with pytest.raises(VQError, match="unsupported vqz format version 9"):
        vqz.read(bytes(bad), "f.vqz")
    bad = bytearray(data)
    struct.pack_into("<II", bad, 14, 0, 45)
    refresh_header_crc(bad)
    with pytest.raises(VQError, match="absurd dimensions 0x45"):
        vqz.read(bytes(bad), "f.vqz")
    bad = bytearray(data)
    struct.pack_into("<II", bad, 14, 70000, 60000)
    refresh_header_crc(bad)
    with pytest.raises(VQError, match="absurd dimensions"):
        vqz.read(bytes(bad), "f.vqz")


def test_truncated_anywhere(weights, vqz_file):
    data = vqz_file[0].read_bytes()
    c = vqz.read(data)
    boundaries = set(np.cumsum([vqz.HEADER_SIZE] + [s for _, s in c.chunk_sizes])[1:].tolist())
    for cut in range(len(data)):
        if cut in boundaries:
            assert decompress(weights, data[:cut], name="cut.vqz").truncated
            continue
        with pytest.raises(VQError) as e:
            decompress(weights, data[:cut], name="cut.vqz")
        msg = str(e.value)
        assert msg.startswith("cut.vqz: ") and "\n" not in msg
        assert "truncated" in msg or cut == 0 or "not a vqz" in msg, msg


def test_flipped_bit_in_every_chunk_is_named(weights, vqz_file):
    data = vqz_file[0].read_bytes()
    c = vqz.read(data)
    start = vqz.HEADER_SIZE
    for label, size in c.chunk_sizes:
        for pos in range(start, start + size, max(1, size // 7)):
            bad = bytearray(data)
            bad[pos] ^= 0x10
            with pytest.raises(VQError) as e:
                decompress(weights, bytes(bad), name="bit.vqz")
            msg = str(e.value)
            assert msg.startswith("bit.vqz: "), msg
            assert any(w in msg for w in ("corrupt", "CRC mismatch", "truncated")), msg
            if pos >= start + vqz.CHUNK_HEAD_SIZE:  # payload bits: the CRC names the chunk
                assert f"CRC mismatch in the {label} chunk" in msg, msg
        start += size
    for pos in range(vqz.HEADER_SIZE):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(VQError):
            decompress(weights, bytes(bad), name="bit.vqz")


def test_model_mismatch_names_both(weights, vqz_file):
    bad = bytearray(vqz_file[0].read_bytes())
    bad[28:36] = bytes.fromhex("0123456789abcdef")
    refresh_header_crc(bad)
    with pytest.raises(VQError, match=f"model 0123456789abcdef, but the weights .* are model {weights.model_id}"):
        decompress(weights, bytes(bad), name="m.vqz")


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_compress_decompress_info(tiny_weights, tmp_path):
    src = tmp_path / "a.bmp"
    Image.fromarray(make_image(48, 64, 11)).save(src)
    r = cli("compress", str(src), "--weights", str(tiny_weights), "--verify", "--device", "cpu")
    assert r.exit_code == 0, r.output
    out = tmp_path / "a.vqz"
    assert out.exists() and "bits/index" in r.stdout and "PSNR" in r.stdout
    r = cli("compress", str(src), "--weights", str(tiny_weights))
    assert_one_line_error(r, str(out))
    assert "already exists" in r.stderr
    r = cli("compress", str(src), "--weights", str(tiny_weights), "-f", "--json", "--stages", "1", "--verify")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["stages"] == 1 and rep["verify"]["psnr"] > 0 and rep["verify"]["ms_ssim"] is None
    assert rep["verify"]["ssim"] is not None and len(rep["stage_stats"]) == 1
    r = cli("info", str(out), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["stages_stored"] == 1
    assert "model id" in cli("info", str(out)).stdout
    r = cli("decompress", str(out), "--weights", str(tiny_weights))
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "a.png").size == (64, 48)
    for ext in ("jpg", "webp", "bmp", "tiff"):
        r = cli("decompress", str(out), "--weights", str(tiny_weights), "-o", str(tmp_path / f"b.{ext}"))
        assert r.exit_code == 0, r.output
        assert Image.open(tmp_path / f"b.{ext}").size == (64, 48)
    r = cli("decompress", str(out), "--weights", str(tiny_weights), "-o", str(tmp_path / "c.png"), "--stages", "1",
            "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["stages"] == 1, r.output
    r = cli("decompress", str(out), "--weights", str(tiny_weights), "-o", str(tmp_path / "d.png"), "--stages", "2",
            "--json")  # at most 2: the file holds 1
    assert r.exit_code == 0 and json.loads(r.stdout)["stages"] == 1, r.output
    r = cli("decompress", str(out), "--weights", str(tiny_weights), "-o", str(tmp_path / "b.xyz"))
    assert r.exit_code == 2 and not (tmp_path / "b.xyz").exists()


def test_cli_stdin_stdout(tiny_weights, tmp_path):
    raw = _encode(Image.fromarray(make_image(40, 40, 12)))
    r = cli("compress", "-", "--weights", str(tiny_weights), input=raw)
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(vqz.MAGIC)
    r2 = cli("decompress", "-", "--weights", str(tiny_weights), input=r.stdout_bytes)
    assert r2.exit_code == 0, r2.stderr
    assert Image.open(io.BytesIO(r2.stdout_bytes)).size == (40, 40)
    r3 = cli("info", "-", input=r.stdout_bytes)
    assert r3.exit_code == 0 and "stages" in r3.stdout


def test_cli_batch(tiny_weights, image_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = cli("compress", str(image_dir), "-o", str(out), "--weights", str(tiny_weights), "--json", "--bpp", "2")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert len(rep) == 8 and len(list(out.glob("*.vqz"))) == 8
    # ... and back: a folder of .vqz files into another folder, one bad file reported, the rest written.
    (out / "junk.vqz").write_bytes(b"not a vqz")
    back = tmp_path / "back"
    back.mkdir()
    r = cli("decompress", str(out), "-o", str(back), "--weights", str(tiny_weights), "--json")
    assert r.exit_code == 1 and "junk.vqz: not a vqz file" in r.stderr, r.output
    rep = json.loads(r.stdout)
    assert sum("error" in i for i in rep) == 1 and sorted(p.name for p in back.iterdir()) == [
        f"img{i}.png" for i in range(8)]
    assert Image.open(back / "img3.png").size == Image.open(image_dir / "img3.png").size
    # Several files without -o: each beside its input, as gzip -d does.
    r = cli("decompress", str(out / "img0.vqz"), str(out / "img1.vqz"), "--weights", str(tiny_weights))
    assert r.exit_code == 0 and (out / "img0.png").exists() and (out / "img1.png").exists(), r.output
    r = cli("decompress", str(out / "img0.vqz"), str(out / "img1.vqz"), "-o", str(back / "img3.png"),
            "--weights", str(tiny_weights))
    assert r.exit_code == 2 and "is a file, not a directory" in r.stderr
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(make_image(24, 24)).save(mixed / "ok.png")
    (mixed / "bad.png").write_bytes(b"not an image")
    r = cli("compress", str(mixed), "--weights", str(tiny_weights))
    assert r.exit_code == 1 and "bad.png: not a readable image" in r.stderr
    assert (mixed / "ok.vqz").exists() and not (mixed / "bad.vqz").exists()
    r = cli("compress", str(image_dir / "img0.png"), str(image_dir / "img1.png"), "-o", str(tmp_path / "nodir"),
            "--weights", str(tiny_weights))
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "nodir").iterdir()) == ["img0.vqz", "img1.vqz"]


def test_cli_usage_errors(tiny_weights, tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(make_image(32, 32, 13)).save(src)
    for args in (["--stages", "1", "--bpp", "1"], ["--psnr", "30", "--bpp", "1"], ["--stages", "9"]):
        r = cli("compress", str(src), "--weights", str(tiny_weights), *args)
        assert r.exit_code == 2, (args, r.output)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a.vqz").exists()


def test_cli_errors_one_line(tiny_weights, vqz_file, tmp_path):
    w = str(tiny_weights)
    data = vqz_file[0].read_bytes()
    cases: list[tuple[list[str], str, Path | None]] = []
    notvqz = tmp_path / "notvqz.vqz"
    Image.fromarray(make_image(16, 16)).save(notvqz, format="PNG")
    cases.append((["decompress", str(notvqz), "--weights", w], "notvqz.vqz", tmp_path / "notvqz.png"))
    wrongver = tmp_path / "ver.vqz"
    wrongver.write_bytes(data[:8] + b"\x07" + data[9:])
    cases.append((["decompress", str(wrongver), "--weights", w], "ver.vqz", tmp_path / "ver.png"))
    for cut in (5, 30, vqz.HEADER_SIZE + 3, len(data) - 1):
        p = tmp_path / f"cut{cut}.vqz"
        p.write_bytes(data[:cut])
        cases.append((["decompress", str(p), "--weights", w], p.name, tmp_path / f"cut{cut}.png"))
    flip = bytearray(data)
    flip[-5] ^= 4
    fp = tmp_path / "flip.vqz"
    fp.write_bytes(bytes(flip))
    cases.append((["decompress", str(fp), "--weights", w], "flip.vqz", tmp_path / "flip.png"))
    mm = bytearray(data)
    mm[28:36] = bytes(8)
    refresh_header_crc(mm)
    mp = tmp_path / "mm.vqz"
    mp.write_bytes(bytes(mm))
    cases.append((["decompress", str(mp), "--weights", w], "0000000000000000", tmp_path / "mm.png"))
    ab = bytearray(data)
    struct.pack_into("<I", ab, 14, 70000)
    refresh_header_crc(ab)
    ap = tmp_path / "absurd.vqz"
    ap.write_bytes(bytes(ab))
    cases.append((["info", str(ap)], "absurd.vqz", None))
    txt = tmp_path / "notes.png"
    txt.write_text("hello")
    cases.append((["compress", str(txt), "--weights", w], "notes.png", tmp_path / "notes.vqz"))
    cases.append((["compress", str(tmp_path / "missing.png"), "--weights", w], "missing.png", None))
    good = tmp_path / "good.png"
    Image.fromarray(make_image(16, 16)).save(good)
    cases.append((["compress", str(good), "-o", str(tmp_path / "nodir" / "x.vqz"), "--weights", w], "nodir", None))
    cases.append((["decompress", str(vqz_file[0]), "-o", str(tmp_path / "nodir" / "x.png"), "--weights", w],
                  "nodir", None))
    cases.append((["compress", str(good), "--weights", str(tmp_path / "nope.safetensors")], "nope.safetensors",
                  tmp_path / "good.vqz"))
    for args, name, out in cases:
        r = cli(*args)
        assert_one_line_error(r, name)
        if out is not None:
            assert not out.exists(), args
    assert not list(tmp_path.glob(".*.tmp"))


def test_info_does_not_import_torch(vqz_file):
    code = ("import sys; from vqcli.cli import app; sys.argv = ['vq', 'info', sys.argv[1]]\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code, str(vqz_file[0])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "model id" in r.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_written_file_decodes_identically_on_cpu(tiny_weights):
    wc, wp = load_weights(tiny_weights, "cuda"), load_weights(tiny_weights, "cpu")
    rgb = make_image(72, 96, 14)
    res = compress(wc, LoadedImage(rgb, None, "RGB"), stages=3, effort=0)  # effort 0: the greedy indices
    idx = encode_indices(wc, rgb)
    a, b = decompress(wp, res.data), decompress(wc, res.data)
    assert np.array_equal(a.indices, idx) and np.array_equal(b.indices, idx)
