"""Hostile inputs: decode work bounded by the file, the pixel limit, one-line errors for bad
images (no Pillow warnings on stderr), lying weights, and out-of-memory reports."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image
from PIL import Image
from typer.testing import CliRunner

from vqcli import format as vqz
from vqcli.cli import app
from vqcli.codec import compress, decompress, entropy_model, pack
from vqcli.errors import VQError, one_line
from vqcli.images import LoadedImage, decode_image
from vqcli.limits import MAX_PIXELS
from vqcli.weights import load_weights, model_id_of, read_safetensors

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "golden" / "tiny.safetensors"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny():
    return load_weights(TINY, "cpu")


def crafted(w, width: int, height: int, payload: bytes, entropy: str = "context") -> bytes:
    """A file whose header is consistent with the weights, announcing width x height, holding
    one stage chunk of the given payload."""
    cfg = w.config
    h = vqz.Header(width, height, "RGB", w.model_id, cfg.downsample, cfg.stages, 1, cfg.codebook_size, entropy)
    return vqz.write(h, [payload])


def measured(fn):
    """(result or exception, seconds, peak bytes traced by tracemalloc: numpy and Python)."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - returned for the caller to check
        out = e
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


# -- decode work bounded by the file ---------------------------------------------------------
@pytest.mark.parametrize("payload", [b"", b"\x01\0\0\0", b"\xff\xff\xff\xff"])
@pytest.mark.parametrize("entropy", ["static", "context"])
def test_52_byte_40_megapixel_file_is_refused_quickly(shipped, payload, entropy):
    data = crafted(shipped, 4096, 10000, payload, entropy)
    assert len(data) == 52 + len(payload)
    err, dt, peak = measured(lambda: decompress(shipped, data, name="bomb.vqz"))
    assert isinstance(err, VQError), err
    assert "bomb.vqz: corrupt stage 1 chunk" in str(err) and "cannot hold 640000 indices" in str(err)
    assert dt < 1.0 and peak < 300e6, (dt, peak)


def test_100_megapixel_header_is_refused_quickly_and_max_pixels_applies(shipped):
    data = crafted(shipped, 65535, 1525, b"\x07\0\0\0")
    err, dt, peak = measured(lambda: decompress(shipped, data, name="big.vqz"))
    assert isinstance(err, VQError) and "corrupt stage 1 chunk" in str(err)
    assert dt < 1.0 and peak < 300e6
    with pytest.raises(VQError, match=r"big.vqz: image is 65535x1525 \(99,940,875 pixels\), over the 1,000,000 pixel"):
        decompress(shipped, data, name="big.vqz", max_pixels=1_000_000)


def test_cli_refuses_the_52_byte_file_in_one_line_without_output(shipped, tmp_path):
    src = tmp_path / "bomb.vqz"
    src.write_bytes(crafted(shipped, 4096, 10000, b""))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vqcli", "decompress", str(src)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    dt = time.perf_counter() - t
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "corrupt stage 1 chunk" in r.stderr, r.stderr
    assert not (tmp_path / "bomb.png").exists() and [p.name for p in tmp_path.iterdir()] == ["bomb.vqz"]
    assert dt < 30  # interpreter, torch import and the shipped weights; the refusal itself is timed above
    r = runner.invoke(app, ["decompress", str(src), "--max-pixels", "1000"])
    assert r.exit_code == 1 and "over the 1,000 pixel limit (--max-pixels)" in r.output
    r = runner.invoke(app, ["decompress", str(src), "--max-pixels", "0"])
    assert r.exit_code == 2 and "--max-pixels 0: must be positive" in r.output


def _reframe(data: bytes, change) -> bytes:
    """The file with its stage payloads changed by change(list) and every CRC recomputed."""
    c = vqz.read(data)
    payloads = change(list(c.stage_chunks))
    h = c.header
    h.stages = len(payloads)
    return vqz.write(h, payloads, c.alpha)


def test_stage_streams_must_be_consumed_exactly(tiny):
    res = compress(tiny, LoadedImage(make_image(64, 80, 3), None, "RGB"), stages=3)
    assert decompress(tiny, res.data).stages == 3
    surplus = _reframe(res.data, lambda p: [p[0], b"\x05\0\0\0" + p[1], p[2]])  # a word below the stack
    with pytest.raises(VQError, match="corrupt stage 2 chunk \\(its stream does not end with its 80 indices: surplus"):
        decompress(tiny, surplus, name="x.vqz")
    cut = _reframe(res.data, lambda p: [p[0], p[1][4:], p[2]])  # a word missing below the stack
    with pytest.raises(VQError, match="corrupt stage 2 chunk \\((its stream does not end|.* cannot hold)"):
        decompress(tiny, cut, name="x.vqz")
    short = _reframe(res.data, lambda p: [p[0], p[1], b""])
    with pytest.raises(VQError, match=r"corrupt stage 3 chunk \(0 bytes cannot hold 80 indices"):
        decompress(tiny, short, name="x.vqz")


@pytest.mark.parametrize("entropy", ["static", "context", "spatial"])
def test_runs_of_code_0_are_padded_to_the_bound_never_changed(tiny, tiny_weights, entropy):
    """Stages of all code 0 code to nothing (ANS's empty start state), below the readers' bound:
    the writer pads such payloads (format 3's padded chunk) and keeps every index."""
    # The committed tiny weights predate the spatial counts; conftest's freshly trained ones carry them.
    tiny = load_weights(tiny_weights) if entropy == "spatial" else tiny
    em = entropy_model(tiny, entropy)
    f = tiny.config.downsample
    zeros = np.zeros((3, 30, 40), dtype=np.int64)
    assert any(em.min_payload_bits(s, 1200) > 0 for s in range(3))  # the bound bites here
    data = pack(tiny, zeros, 40 * f, 30 * f, entropy=entropy)
    c = vqz.read(data)
    assert c.header.version == 3 and any(len(p) < n for p, n in zip(c.stage_chunks, c.stage_sizes))
    for s in range(3):
        assert 8 * c.stage_sizes[s] >= em.min_payload_bits(s, 1200)
    dec = decompress(tiny, data)
    assert np.array_equal(dec.indices, zeros) and dec.flat.count == 0
    assert pack(tiny, dec.indices, 40 * f, 30 * f, entropy=entropy) == data
    # The padding is zeros: anything else there is a corrupt file, not a second stream.
    k = next(s for s in range(3) if len(c.stage_chunks[s]) < c.stage_sizes[s])
    at = vqz.HEADER_SIZE + sum(n for _, n in c.chunk_sizes[:2 + k])  # after the flat cells and the stage map
    n = c.stage_sizes[k]
    assert data[at:at + 2] == bytes([ord("P"), k])
    bad = bytearray(data)
    bad[at + 10 + n - 5] = 1  # the last byte of padding
    bad[at + 6:at + 10] = struct.pack("<I", zlib.crc32(bytes(bad[at + 10:at + 10 + n]), zlib.crc32(data[at:at + 6])))
    with pytest.raises(VQError, match=rf"^z.vqz: corrupt stage {k + 1} chunk \(bad padding\)"):
        decompress(tiny, bytes(bad), name="z.vqz")


# -- images: one line, no warnings, size before decoding ---------------------------------------
def _png_with_size(width: int, height: int, mode: str = "P") -> bytes:
    """A small PNG whose IHDR claims width x height (CRC recomputed): a damaged header."""
    buf = io.BytesIO()
    Image.new(mode, (32, 32)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_palette_png_claiming_32x2097176_is_refused_from_its_header():
    data = _png_with_size(32, 2_097_176)
    err, dt, peak = measured(lambda: decode_image(data, "tall.png"))
    assert isinstance(err, VQError) and "tall.png: image is 32x2097176, outside 1 to 65535 pixels per side" in str(err)
    assert dt < 1.0 and peak < 50e6


def test_images_over_the_pixel_limit_and_pillow_bomb_sizes_are_one_clean_error(recwarn):
    with pytest.raises(VQError, match="over the 1,000 pixel limit"):
        decode_image(_png_with_size(40, 40, "RGB"), "a.png", max_pixels=1000)
    # 150 MP: above Pillow's own warning (89 MP) and under vq's limit: no DecompressionBombWarning,
    # and the missing data is one error.
    with pytest.raises(VQError, match="big.png: not a readable image"):
        decode_image(_png_with_size(15000, 10000, "RGB"), "big.png")
    # 300 MP, beyond Pillow's DecompressionBombError (2 x 89 MP) and beyond vq's limit
    with pytest.raises(VQError, match="over the 200,000,000 pixel limit"):
        decode_image(_png_with_size(20000, 15000, "RGB"), "bomb.png")
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    assert MAX_PIXELS == 200_000_000


def _exif_jpeg_with_corrupt_exif() -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(make_image(16, 24)).save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    i = data.find(b"Exif\0\0")
    data[i + 10:i + 14] = b"\xff\xff\xff\x7f"  # offset of the first IFD far beyond the segment
    return bytes(data)


def test_corrupt_and_truncated_images_print_no_warnings(recwarn):
    buf = io.BytesIO()
    Image.fromarray(make_image(40, 50)).save(buf, "TIFF")
    tif = buf.getvalue()
    outcomes = []
    for data, name in [(_exif_jpeg_with_corrupt_exif(), "exif.jpg"), (tif[:len(tif) // 2], "cut.tif"),
                       (tif[:200], "cut2.tif")]:
        try:
            outcomes.append(decode_image(data, name).rgb.shape)
        except VQError as e:
            assert str(e).startswith(f"{name}: ") and "\n" not in str(e)
            outcomes.append("error")
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    assert outcomes[0] == (24, 16, 3) or outcomes[0] == (16, 24, 3) or outcomes[0] == "error"


def test_nan_float_tiff_is_a_clean_error_without_numpy_warnings(recwarn):
    a = np.full((8, 8), 100.0, dtype=np.float32)
    a[2, 3] = np.nan
    buf = io.BytesIO()
    Image.fromarray(a, "F").save(buf, "TIFF")
    with pytest.raises(VQError, match="nan.tif: float image holds NaN or infinite samples"):
        decode_image(buf.getvalue(), "nan.tif")
    a[2, 3] = np.inf
    buf = io.BytesIO()
    Image.fromarray(a, "F").save(buf, "TIFF")
    with pytest.raises(VQError, match="NaN or infinite"):
        decode_image(buf.getvalue(), "inf.tif")
    assert not recwarn.list


def _tiff(a: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode).save(buf, "TIFF")
    return buf.getvalue()


def test_32_bit_float_and_integer_images_by_their_range():
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert decode_image(_tiff(ramp, "F"), "unit.tif").rgb[..., 0].tolist() == np.round(ramp * 255).astype(int).tolist()
    assert decode_image(_tiff(ramp * 200, "F"), "levels.tif").rgb.max() == 200
    with pytest.raises(VQError, match=r"signed.tif: float samples span -1\.\.1, neither 0\.\.1 nor 0\.\.255"):
        decode_image(_tiff(ramp * 2 - 1, "F"), "signed.tif")
    wide = (ramp * 25500).astype(np.int32)
    assert decode_image(_tiff(wide, "I"), "i16.tif").rgb.max() == round(25500 / 257)  # 16-bit levels
    assert decode_image(_tiff((ramp * 255).astype(np.int32), "I"), "i8.tif").rgb.max() == 255
    with pytest.raises(VQError, match="i32.tif: 32-bit integer samples span 0..100000, beyond 16 bits"):
        decode_image(_tiff((ramp * 100000).astype(np.int32), "I"), "i32.tif")


def test_file_names_with_control_characters_make_one_line_errors(tmp_path):
    bad = tmp_path / "evil\nname\x1b[2J.png"
    bad.write_bytes(b"not an image")
    r = subprocess.run([sys.executable, "-m", "vqcli", "compress", str(bad), "--weights", str(TINY)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "evil\\nname\\x1b[2J.png: not a readable image" in r.stderr
    # in a batch too
    good = tmp_path / "ok.png"
    Image.fromarray(make_image(16, 16)).save(good)
    r = runner.invoke(app, ["compress", str(bad), str(good), "--weights", str(TINY)])
    assert r.exit_code == 1
    assert [ln for ln in r.output.splitlines() if "error" in ln] == [
        f"vq: error: {one_line(str(bad))}: not a readable image (unknown format)"]
    assert one_line("a\nb\tc\x00") == "a\\nb\\tc\\x00"


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB\nmore"),
                                 RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: "
                                              "you tried to allocate 9 GB. out of memory"),
                                 MemoryError()])
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_out_of_memory_is_one_line_naming_the_file(tmp_path, monkeypatch, exc, command, tiny):
    import vqcli.codec

    img = tmp_path / "photo.png"
    Image.fromarray(make_image(24, 24)).save(img)
    src = img
    if command == "decompress":
        src = tmp_path / "photo.vqz"
        src.write_bytes(compress(tiny, LoadedImage(make_image(24, 24), None, "RGB")).data)

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(vqcli.codec, command, boom)
    other = src.with_name("other" + src.suffix)
    other.write_bytes(src.read_bytes())
    for args in ([str(src)], [str(src), str(other)]):  # single file and batch (in-process: the patch holds)
        r = runner.invoke(app, [command, *args, "--weights", str(TINY), "-o", str(tmp_path / "out"), "--jobs", "1"]
                          if len(args) > 1 else [command, *args, "--weights", str(TINY), "-f"])
        lines = [ln for ln in r.output.splitlines() if "error" in ln]
        assert r.exit_code == 1 and lines[0] == f"vq: error: {src}: out of memory (try a smaller image, " \
            f"--max-pixels or --device cpu)", r.output
        (tmp_path / "out").mkdir(exist_ok=True)


# -- weights that lie --------------------------------------------------------------------------
def _rewrite(src: Path, dst: Path, change, fix_id: bool = True) -> Path:
    from safetensors.torch import save

    tensors, meta = read_safetensors(src)
    meta = dict(meta)
    change(tensors, meta)
    if fix_id:
        meta["model_id"] = model_id_of(tensors)
    dst.write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
    return dst


def _first_float(tensors) -> str:
    return next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 4 and not k.startswith("stats."))


def _set(k_fn, value):
    def change(t, m):
        k = k_fn(t)
        v = t[k].clone()
        v.view(-1)[3] = value
        t[k] = v
    return change


LIES = {
    "nan": (_set(_first_float, float("nan")), "holds NaN or infinite values"),
    "inf": (_set(_first_float, float("inf")), "holds NaN or infinite values"),
    "shape": (lambda t, m: t.__setitem__(_first_float(t), t[_first_float(t)][:1].clone()), "has shape"),
    "dtype": (lambda t, m: t.__setitem__(_first_float(t), t[_first_float(t)].to(torch.int32)), "is torch.int32, expected"),
    "negative counts": (_set(lambda t: "stats.histogram", -5), "negative counts"),
    "float counts": (lambda t, m: t.__setitem__("stats.histogram", t["stats.histogram"].double()), "expected integer counts"),
    "config channels": (lambda t, m: m.__setitem__("config", json.dumps({**json.loads(m["config"]),
                                                                        "channels": [8, 12, 4096]})), "has shape"),
    "config huge": (lambda t, m: m.__setitem__("config", json.dumps({**json.loads(m["config"]), "channels":
                                                                    [100000, 100000, 100000]})), "has shape"),
    "config stages": (lambda t, m: m.__setitem__("config", json.dumps({**json.loads(m["config"]), "stages": 5})),
                      "missing"),
    "config junk": (lambda t, m: m.__setitem__("config", '{"downsample": 3'), "bad model config"),
    "context shape": (lambda t, m: t.__setitem__("stats.context", t["stats.context"][:, :3].clone()), None),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_weights_that_lie_are_one_line_errors(tmp_path, lie):
    change, msg = LIES[lie]
    p = _rewrite(TINY, tmp_path / "w.safetensors", change)
    if msg is None:  # found when the entropy model is built: at decode time
        w = load_weights(p)
        with pytest.raises(VQError, match="stats.context has shape"):
            entropy_model(w, "context")
        return
    err, dt, peak = measured(lambda: load_weights(p))
    assert isinstance(err, VQError) and str(err).startswith(f"{p}: ") and msg in str(err), err
    assert "\n" not in str(err) and dt < 5 and peak < 300e6


def test_truncated_and_bit_flipped_weights_are_one_line_errors(tmp_path):
    data = TINY.read_bytes()
    n = int.from_bytes(data[:8], "little")
    rng = np.random.default_rng(0)
    cases = [data[:k] for k in (0, 5, 8, 100, 8 + n, len(data) // 2, len(data) - 1)]
    for _ in range(40):
        b = bytearray(data)
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(b))
    p = tmp_path / "w.safetensors"
    outcomes = set()
    for c in cases:
        p.write_bytes(c)
        try:
            load_weights(p)
            outcomes.add("ok")  # a flip in unused metadata text
        except VQError as e:
            assert str(e).startswith(f"{p}: ") and "\n" not in str(e)
            outcomes.add("error")
    assert "error" in outcomes
    r = runner.invoke(app, ["decompress", str(ROOT / "tests/golden/tiny_static.vqz"), "--weights", str(p), "-o",
                            str(tmp_path / "x.png")])
    assert r.exit_code in (0, 1) and r.output.count("\n") <= 2


def test_libtiff_messages_join_the_error_instead_of_stderr(capfd):
    buf = io.BytesIO()
    Image.fromarray(make_image(40, 50)).save(buf, "TIFF", compression="tiff_deflate")
    data = bytearray(buf.getvalue())
    start = data.find(b"\x78")  # the zlib stream of the strip
    data[start + 2:start + 40] = bytes(38)
    with pytest.raises(VQError, match=r"z.tif: not a readable image \(.*ZIPDecode"):
        decode_image(bytes(data), "z.tif")
    assert capfd.readouterr().err == ""


def test_pillow_log_messages_do_not_reach_stderr(tmp_path):
    """Pillow logs 'More samples per pixel than can be decoded' with logger.error before it refuses
    such a TIFF (found by tools/fuzz.py). In a real process (pytest installs logging handlers of its own)."""
    buf = io.BytesIO()
    Image.fromarray(make_image(8, 8)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        tag = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, tag)[0] == 277:  # SamplesPerPixel
            struct.pack_into("<I", data, tag + 8, 8196)
    bad = tmp_path / "spp.tif"
    bad.write_bytes(bytes(data))
    r = subprocess.run(vq_cmd := [sys.executable, "-m", "vqcli", "compress", str(bad), "--weights", str(TINY)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, (vq_cmd, r.stderr)
    assert "spp.tif: not a readable image" in r.stderr and "More samples" not in r.stderr


def test_pillow_decompression_bomb_error_is_one_clean_error(monkeypatch):
    """Pillow's own guard (raised in Image.open, before vq's check) still ends in one VQError."""
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
    err, dt, peak = measured(lambda: decode_image(_png_with_size(40, 40, "RGB"), "b.png", max_pixels=500))
    assert isinstance(err, VQError) and str(err).startswith("b.png: not a readable image (Image size (1600 pixels)")
    assert "\n" not in str(err)
