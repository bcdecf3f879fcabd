"""Tiled coding (vqcli.tiling) against whole-image coding, the receptive field, the OOM fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqcli import codec, metrics, tiling
from vqcli.config import PRESETS
from vqcli.errors import VQError
from vqcli.model import VQVAE
from vqcli.weights import load_weights

UNTILED = 10_000  # a tile bigger than any test image: one tile, no halo


def edge_image(h: int, w: int) -> np.ndarray:
    """Sharp-edged blocks, stripes and a diagonal that cross every tile border of small tiles."""
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.where((xx // 13 + yy // 11) % 2, 230, 20)
    img[..., 1] = np.where(xx > yy * w / h, 200, 40)
    img[..., 2] = ((xx * 7 + yy * 3) % 256).astype(np.uint8)
    img[(xx - w / 2) ** 2 + (yy - h / 3) ** 2 < (h / 4) ** 2] = (250, 250, 10)
    return img


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_receptive_field_matches_impulse_response(preset: str) -> None:
    """Perturb one input pixel (encoder) or one latent cell (decoder) of a random model and find
    how far the change reaches: exactly the computed receptive field."""
    cfg = PRESETS[preset]
    torch.manual_seed(0)
    model = VQVAE(cfg).double().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.bias, std=0.1)
    rf = tiling.receptive_field(cfg)
    f = cfg.downsample
    side = f * (2 * (rf.encoder_halo + 2))
    x = torch.rand(1, 3, side, side, dtype=torch.float64)
    base = model.encoder(x)
    before = after = -10**9
    for q in range(side // 2 - f, side // 2 + f):  # every phase of a pixel within its cell
        y = x.clone()
        y[0, :, side // 2, q] += 0.5
        changed = (model.encoder(y) != base).any(1)[0, side // (2 * f)].nonzero()[:, 0].tolist()
        assert changed
        before = max(before, max(t * f - q for t in changed))
        after = max(after, max(q - t * f - f + 1 for t in changed))
    assert (before, after) == rf.encoder_px

    n = 2 * rf.decoder_halo + 5
    z = torch.randn(1, cfg.latent_dim, n, n, dtype=torch.float64)
    z2 = z.clone()
    c = n // 2
    z2[0, :, c, c] += 1.0
    diff = (model.decoder(z2) != model.decoder(z)).any(1)[0]
    cells = {int(p) // f for p in diff.any(0).nonzero()[:, 0]}
    # a pixel in cell k reads cells k - before .. k + after, so cell c reaches cells c - after .. c + before
    assert (max(cells) - c, c - min(cells)) == rf.decoder_cells


def test_shipped_receptive_field() -> None:
    rf = tiling.receptive_field(PRESETS["cpu"])
    assert (rf.encoder_px, rf.encoder_halo, rf.decoder_halo) == ((56, 56), 7, 9)


@pytest.mark.parametrize("h,w,tile,halo", [(7, 9, 4, 2), (64, 96, 128, 9), (500, 750, 128, 9), (1, 1, 16, 3)])
def test_plan_cores_partition_the_grid(h: int, w: int, tile: int, halo: int) -> None:
    cover = np.zeros((h, w), dtype=int)
    for t in tiling.plan(h, w, tile, halo):
        y0, y1, x0, x1 = t.core
        a0, a1, b0, b1 = t.full
        assert y1 - y0 <= tile and x1 - x0 <= tile
        assert (a0, b0) == (max(0, y0 - halo), max(0, x0 - halo)) and (a1, b1) == (min(h, y1 + halo), min(w, x1 + halo))
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


@pytest.mark.parametrize("tile", [4, 5, 8])
def test_tiled_matches_untiled(tiny_weights, tile: int) -> None:
    """Small forced tiles on a 100x140 image with sharp edges across every tile border: decoded
    pixels within one level of the untiled decode, equal PSNR, (near-)identical indices."""
    w = load_weights(tiny_weights)
    img = edge_image(100, 140)  # not a multiple of 8: the bottom/right tiles are padded
    full = codec.encode_indices(w, img, tile=UNTILED)
    tiled = codec.encode_indices(w, img, tile=tile)
    assert tiled.shape == full.shape
    assert (tiled != full).mean() <= 0.001  # float near-ties only
    a = codec.decode_indices(w, full, 140, 100, tile=UNTILED)
    b = codec.decode_indices(w, full, 140, 100, tile=tile)
    assert np.abs(a.astype(int) - b).max() <= 1
    assert abs(metrics.psnr(img, a) - metrics.psnr(img, b)) < 0.01


def test_without_halo_the_seams_show(tiny_weights, monkeypatch) -> None:
    """The comparison above can fail: with no halo the tile borders differ by far more than a level."""
    w = load_weights(tiny_weights)
    img = edge_image(100, 140)
    idx = codec.encode_indices(w, img, tile=UNTILED)
    a = codec.decode_indices(w, idx, 140, 100, tile=UNTILED)
    monkeypatch.setattr(tiling.ReceptiveField, "decoder_halo", property(lambda self: 0))
    b = codec.decode_indices(w, idx, 140, 100, tile=4)
    assert np.abs(a.astype(int) - b).max() > 1


def test_pixels_are_converted_tile_by_tile(tiny_weights, monkeypatch) -> None:
    import vqcli.model

    w = load_weights(tiny_weights)
    shapes = []
    real = vqcli.model.to_tensor
    monkeypatch.setattr(vqcli.model, "to_tensor", lambda rgb: shapes.append(rgb.shape) or real(rgb))
    codec.encode_indices(w, edge_image(96, 160), tile=4)
    halo = tiling.receptive_field(w.config).encoder_halo
    assert len(shapes) == 3 * 5
    assert max(s[0] * s[1] for s in shapes) <= (4 + 2 * halo) ** 2 * 64


def _oom_above(monkeypatch, model, method: str, cells: int) -> list[int]:
    """Make model.<method> raise an out-of-memory error for inputs bigger than `cells` latent cells."""
    seen: list[int] = []
    real = getattr(model, method)
    f = model.factor

    def fake(x, *a, **k):
        n = x.shape[-2] * x.shape[-1] // (f * f if method == "latent" else 1)
        seen.append(n)
        if n > cells:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real(x, *a, **k)

    monkeypatch.setattr(model, method, fake)
    return seen


def test_out_of_memory_falls_back_to_smaller_tiles(tiny_weights, monkeypatch) -> None:
    w = load_weights(tiny_weights)
    img = edge_image(128, 160)
    idx = codec.encode_indices(w, img, tile=UNTILED)
    ref = codec.decode_indices(w, idx, 160, 128, tile=UNTILED)
    # the 16x20 grid: tiles of 64 and 32 (one 320-cell tile) fail, 16 (16x13 with halo) fits
    seen = _oom_above(monkeypatch, w.model, "decode_latent", 220)
    out = codec.decode_indices(w, idx, 160, 128, tile=64)
    assert seen[:2] == [320, 320] and max(seen[2:]) <= 220
    assert np.abs(out.astype(int) - ref).max() <= 1
    seen = _oom_above(monkeypatch, w.model, "latent", 220)
    enc = codec.encode_indices(w, img, tile=64)
    assert seen[:2] == [320, 320] and len(seen) > 2
    assert (enc != idx).mean() <= 0.001


def test_only_the_tile_cores_are_quantized(tiny_weights, monkeypatch) -> None:
    """The halo goes through the encoder (its convolutions need it) but not through the RVQ: every
    latent cell is quantized exactly once."""
    w = load_weights(tiny_weights)
    cells = []
    real = w.model.quantize
    monkeypatch.setattr(w.model, "quantize", lambda z, *a: cells.append(z.shape[-2] * z.shape[-1]) or real(z, *a))
    idx = codec.encode_indices(w, edge_image(96, 160), tile=4)
    assert len(cells) == 3 * 5 and sum(cells) == idx.shape[1] * idx.shape[2]


def test_out_of_memory_at_the_smallest_tile_is_one_error(tiny_weights, monkeypatch) -> None:
    w = load_weights(tiny_weights)
    idx = codec.encode_indices(w, edge_image(64, 64), tile=UNTILED)
    _oom_above(monkeypatch, w.model, "decode_latent", 0)
    with pytest.raises(VQError, match="out of memory"):
        codec.decode_indices(w, idx, 64, 64, tile=64)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "1"])
def test_rgb_pixels_band_by_band_equal_a_whole_conversion(mode: str) -> None:
    from PIL import Image

    from vqcli.images import _rgb_pixels

    im = Image.fromarray(edge_image(37, 29)).convert(mode)
    assert np.array_equal(_rgb_pixels(im, band=8), np.asarray(im.convert("RGB")))


def test_bench_speed_child_measures_a_codec(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    from PIL import Image

    path = Path(__file__).resolve().parents[1] / "tools" / "bench_speed.py"
    spec = importlib.util.spec_from_file_location("bench_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(edge_image(520, 780)).save(val / "a.png")
    small, big = bench.make_inputs(val, tmp_path / "out", 0.6)
    assert Image.open(small).size == (768, 512) and abs(Image.open(big).size[0] * Image.open(big).size[1] - 6e5) < 2e4
    r = bench.child("JPEG", "decode", small, 2)
    assert r["pixels"] == 768 * 512 and r["seconds"] > 0 and r["peak_rss_mb"] > 10
    # vq at another quality: its own file, an enhanced one above quality 50
    from vqcli import format as vqz

    assert bench.child("vq -q 60", "encode", small, 1)["pixels"] == 768 * 512
    assert vqz.info(small.with_suffix(".q60.vqz").read_bytes())["format_version"] == 4
    assert not small.with_suffix(".vqz").exists()
