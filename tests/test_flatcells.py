"""Flat cells (format 3): flat colours come back exact and cost next to nothing, at every rate."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import decode_with_threads, make_image
from PIL import Image
from typer.testing import CliRunner

from vqcli import flatcells
from vqcli.cli import app
from vqcli.codec import compress, decompress, default_quality, pack
from vqcli.errors import VQError
from vqcli.images import LoadedImage
from vqcli.model import to_tensor
from vqcli.rate import ENHANCE_FROM
from vqcli.weights import load_weights

runner = CliRunner()


def _png_bytes(rgb: np.ndarray) -> int:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", optimize=True)
    return len(buf.getvalue())


def _round_trip(weights, rgb: np.ndarray, **rate):
    res = compress(weights, LoadedImage(rgb, None, "RGB"), **rate)
    return res, decompress(weights, res.data)


@pytest.mark.parametrize(("size", "colour"), [((1, 1), (200, 30, 40)), ((8, 8), (0, 0, 255)), ((3, 29), (7, 250, 3)),
                                              ((750, 1000), (255, 255, 255)), ((750, 1000), (0, 0, 0))])
def test_flat_images_come_back_exact_and_cost_next_to_nothing(shipped, size, colour):
    rgb = np.empty((*size, 3), dtype=np.uint8)
    rgb[:] = colour
    res, dec = _round_trip(shipped, rgb)
    assert np.array_equal(dec.rgb, rgb)
    assert dec.header.version == 3 and dec.flat.count == dec.flat.mask.size and (dec.indices == -1).all()
    assert len(res.data) <= max(_png_bytes(rgb), 200)  # a 1000x750 flat PNG is 2-3 KB; these ~140 bytes
    assert res.flat_cells == dec.flat.count and res.flat_cell_bytes > 0


def test_flat_regions_are_exact_at_every_rate_and_the_rest_is_coded(shipped):
    rgb = make_image(80, 120, 3)
    rgb[:, :56] = (250, 251, 252)  # a flat region: 7 columns of cells
    rgb[48:, 96:] = (20, 40, 200)  # a flat corner: 4 x 3 cells
    for rate in ({}, {"quality": 0}, {"quality": 100}, {"stages": 2}, {"effort": 0}):
        res, dec = _round_trip(shipped, rgb, **rate)
        assert np.array_equal(dec.rgb[:, :56], rgb[:, :56]) and np.array_equal(dec.rgb[48:, 96:], rgb[48:, 96:]), rate
        quality = rate.get("quality", 0 if "stages" in rate else default_quality(shipped))
        assert dec.header.version == (4 if quality > ENHANCE_FROM else 3)  # 4: the enhancement layer
        # cells inside the flat region hold no index; its edge and the rest keep theirs
        uncoded = np.zeros((10, 15), dtype=bool)
        uncoded[:, :6] = uncoded[7:, 13:] = True  # outside the grid counts as flat
        assert np.array_equal(dec.flat.uncoded, uncoded) and (dec.indices[:, uncoded] == -1).all()
        assert (dec.indices[0, ~uncoded] >= 0).all()
        # a writer's round trip: the same indices and flat cells give the same bytes
        assert pack(shipped, dec.indices, 120, 80, flat=dec.flat, enhancement=dec.enhancement) == res.data


def test_a_photo_without_flat_cells_is_written_as_before(shipped):
    rgb = make_image(64, 96, 4)
    res, dec = _round_trip(shipped, rgb, quality=45)  # a base quality: no enhancement layer either
    assert res.flat_cells == 0 and dec.header.version == 2 and dec.flat is None


def test_grey_and_alpha_flat_images(shipped):
    grey = np.full((20, 30, 3), 77, dtype=np.uint8)
    alpha = np.tile(np.arange(30, dtype=np.uint8) * 8, (20, 1))
    res = compress(shipped, LoadedImage(grey, alpha, "LA"))
    dec = decompress(shipped, res.data)
    im = dec.to_pil()
    assert im.mode == "LA" and np.array_equal(np.asarray(im)[..., 0], grey[..., 0])
    assert np.array_equal(dec.alpha, alpha)


def test_flat_cells_decode_the_same_at_any_thread_count(shipped):
    rgb = make_image(72, 104, 9)
    rgb[:40, :64] = (240, 200, 10)
    data = compress(shipped, LoadedImage(rgb, None, "RGB")).data
    one, two = decode_with_threads(shipped, data, 1), decode_with_threads(shipped, data, 2)
    assert np.array_equal(one.indices, two.indices) and np.array_equal(one.rgb, two.rgb)


def test_the_latent_of_a_flat_field_is_the_encoders(tiny_weights):
    """What a decoder puts at an uncoded cell is what the encoder gives inside a flat field."""
    tiny = load_weights(tiny_weights)
    colours = torch.tensor([[255, 255, 255], [0, 0, 0], [200, 30, 40]], dtype=torch.uint8)
    got = tiny.model.flat_latent(colours)
    for c, z in zip(colours, got):
        field = np.empty((160, 160, 3), dtype=np.uint8)
        field[:] = c.numpy()
        centre = tiny.model.latent(to_tensor(field))[0, :, 10, 10]
        assert torch.allclose(centre, z, atol=1e-5)


def test_find_pads_as_the_encoder_does():
    rgb = make_image(13, 21, 1)
    rgb[8:, 16:] = (1, 2, 3)  # the bottom-right cell: 5x5 pixels, replicate-padded to 8x8
    rgb[:8, :8] = (9, 9, 9)
    flat = flatcells.find(rgb, 8)
    assert flat.mask.tolist() == [[True, False, False], [False, False, True]]
    assert flat.colours.tolist() == [[9, 9, 9], [1, 2, 3]]
    back = flatcells.decode(flatcells.encode(flat), (2, 3))
    assert np.array_equal(back.mask, flat.mask) and np.array_equal(back.colours, flat.colours)
    out = np.zeros_like(rgb)
    back.paint(out, 8)
    assert np.array_equal(out[8:, 16:], rgb[8:, 16:]) and np.array_equal(out[:8, :8], rgb[:8, :8])
    assert not out[:8, 8:16].any()  # a cell that is not flat is left alone


@pytest.mark.parametrize("height, width", [(37, 51), (40, 48), (3, 70)])
def test_paint_fills_exactly_the_flat_cells_also_those_the_crop_cuts(height, width):
    rng = np.random.default_rng(height)
    mask = rng.random((-(-height // 8), -(-width // 8))) < 0.5
    mask[-1, -1] = mask[0, 0] = True
    flat = flatcells.FlatCells(mask, rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8))
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = rgb.copy()
    flat.paint(out, 8)
    for (y, x), colour in zip(zip(*np.nonzero(mask)), flat.colours):
        assert (out[8 * y:8 * y + 8, 8 * x:8 * x + 8] == colour).all()
    kept = ~np.repeat(np.repeat(mask, 8, 0), 8, 1)[:height, :width]
    assert np.array_equal(out[kept], rgb[kept])


def test_hostile_flat_cell_chunks():
    import zlib

    flat = flatcells.find(np.full((16, 24, 3), 5, dtype=np.uint8), 8)
    good = flatcells.encode(flat)
    raw = zlib.decompress(good)
    cases = [
        ("mask does not cover", zlib.compress(raw[:0])),
        ("bits set beyond the grid", zlib.compress(b"\xff" + raw[1:])),  # 6 cells: the last two bits must be 0
        ("does not hold the colours of its 6 cells", zlib.compress(raw[:-1])),
        ("does not hold the colours of its 6 cells", zlib.compress(raw + b"\0")),
        ("does not hold the colours", good[:-3]),  # a cut stream
        ("incorrect header check", b"junk" + good),
    ]
    for why, payload in cases:
        with pytest.raises(VQError, match=f"^f.vqz: corrupt flat-cell chunk \\(.*{why}"):
            flatcells.decode(payload, (2, 3), "f.vqz")


def test_cli_flat_image_round_trip_and_info(tiny_weights, tmp_path):
    src = tmp_path / "white.png"
    Image.fromarray(np.full((40, 64, 3), 255, dtype=np.uint8)).save(src)
    r = runner.invoke(app, ["compress", str(src), "-w", str(tiny_weights), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["flat_cells"] == 40
    back = tmp_path / "back.png"
    r = runner.invoke(app, ["decompress", str(tmp_path / "white.vqz"), "-w", str(tiny_weights), "--device", "cpu",
                            "-o", str(back)])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.asarray(Image.open(back)), np.full((40, 64, 3), 255))
    r = runner.invoke(app, ["info", str(tmp_path / "white.vqz"), "--json"])
    info = json.loads(r.stdout)
    assert info["format_version"] == 3 and info["flat_cells"] == 40 and info["flat_cell_bytes"] > 0
