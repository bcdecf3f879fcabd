"""The enhancement layer (format 4): integer contexts, the symbol stream, tiling, the file's round
trip, determinism, the quality ladder above ENHANCE_FROM, hostile chunks and old files."""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import decode_with_threads, make_image, torch_threads

from vqcli import codec, enhance, enhancecoding, metrics, tiling
from vqcli import format as vqz
from vqcli.enhance import (
    BUCKETS,
    PREDICTOR_LIMIT,
    PREDICTOR_SHIFT,
    ContextRule,
    EnhanceConfig,
    Enhancement,
    contexts,
    first_pass,
    pass_layout,
)
from vqcli.errors import VQError
from vqcli.images import LoadedImage
from vqcli.rate import ENHANCE_FROM, enhanced_rate, ladder_deadzone
from vqcli.weights import load_weights
from vqcli.weightspath import WEIGHTS_PATH_ENV

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_LAYER = ROOT / "weights" / enhancecoding.ENHANCE_DIR / enhancecoding.DEFAULT_LAYER
CFG = EnhanceConfig(channels=4, width=8, levels=3, radius=7)
CFG2 = dataclasses.replace(CFG, same_channel=True)
CFG4 = dataclasses.replace(CFG, same_channel=True, four_passes=True, predictor=True)
CFG_LIGHT = dataclasses.replace(CFG4, light_synthesis=True)
CONFIGS, CONFIG_IDS = [CFG, CFG2, CFG4], ["cross-channel", "same-channel", "four-passes-predicted"]
EVERY_CONFIG = pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
NETWORKS = pytest.mark.parametrize("cfg", [CFG, CFG_LIGHT], ids=["synthesis", "light-synthesis"])


def _layer(path: Path, base_id: str, seed: int = 0, cfg: EnhanceConfig = CFG) -> enhancecoding.EnhanceWeights:
    """A small untrained layer over base_id with tables from Laplacian symbol counts."""
    torch.manual_seed(seed)
    net = Enhancement(cfg)
    rng = np.random.default_rng(seed)
    if cfg.predictor:  # a predictor of some spread, so that the buckets differ
        net.predictor.copy_(_random_predictor(cfg.channels, seed))
    counts = rng.integers(0, 50, (cfg.levels, cfg.channels, cfg.contexts, cfg.alphabet))
    counts[..., cfg.radius] += 2000  # symbol 0 is the most common, as in a trained layer
    enhancecoding.save_enhancement(path, net, counts, base_id, {"test": True})
    return enhancecoding.load_enhancement(path)


@pytest.fixture(params=[CFG], ids=["cross-channel"])
def tiny_layer(tiny_weights, tmp_path, monkeypatch, request):
    """A layer over the tiny weights, on the weights search path (of the config in param)."""
    w = load_weights(tiny_weights)
    layer = _layer(tmp_path / "layer.safetensors", w.model_id, cfg=request.param)
    monkeypatch.setenv(WEIGHTS_PATH_ENV, str(tmp_path))
    return w, layer


def _symbols(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0, 1.5, shape)), -CFG.radius, CFG.radius).astype(np.int8)


def test_a_channel_context_depends_only_on_earlier_channels():
    sym = torch.from_numpy(_symbols((6, 9, 11), 0)).long()
    ctx = contexts(sym)
    assert ctx.dtype == torch.int64 and int(ctx[0].max()) == 0 and int(ctx.max()) < BUCKETS
    assert int(ctx[1:].max()) > 0
    changed = sym.clone()
    changed[3:] = 5
    assert torch.equal(contexts(changed)[:4], ctx[:4])
    assert not torch.equal(contexts(changed)[4:], ctx[4:])


def test_a_second_pass_context_sees_its_own_channels_first_pass_and_nothing_later():
    sym = torch.from_numpy(_symbols((6, 9, 11), 0)).long()
    ctx = contexts(sym, ContextRule(2))
    first = first_pass(9, 11)
    assert torch.equal(ctx[:, first], contexts(sym)[:, first])  # the first pass: as without
    assert int(ctx[:, ~first].min()) >= BUCKETS and int(ctx.max()) < CFG2.contexts
    changed = sym.clone()
    changed[3, ~first] = 5  # channel 3's second pass: no context of channels <= 3 changes
    assert torch.equal(contexts(changed, ContextRule(2))[:4], ctx[:4])
    changed = sym.clone()
    changed[3][first] = 5  # its first pass: channel 3's second pass and later channels change
    after = contexts(changed, ContextRule(2))
    assert torch.equal(after[:3], ctx[:3]) and torch.equal(after[3, first], ctx[3, first])
    assert not torch.equal(after[3, ~first], ctx[3, ~first])


def _random_predictor(channels: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(-2000, 6000, (channels, 1 + 2 * channels))
                            ).to(torch.int32)


def test_each_of_four_passes_sees_only_earlier_passes_of_its_channel():
    sym = torch.from_numpy(_symbols((6, 9, 11), 0)).long()
    rule = ContextRule(4, _random_predictor(6, 0))
    ctx = contexts(sym, rule)
    layout = pass_layout(9, 11, 4)
    assert sum(cells.long() for cells, _ in layout).eq(1).all()  # the passes tile the grid
    assert torch.equal(ctx[:, layout[0][0]], contexts(sym, ContextRule(2, rule.predictor))[:, layout[0][0]])
    assert int(ctx.max()) < CFG4.contexts
    for p, (cells, _) in enumerate(layout):
        changed = sym.clone()
        changed[3][cells] = 7  # channel 3's pass p: its earlier passes and channels < 3 keep their contexts
        after = contexts(changed, rule)
        assert torch.equal(after[:3], ctx[:3])
        for cells_before, _ in layout[:p + 1]:
            assert torch.equal(after[3, cells_before], ctx[3, cells_before])
        if p < 2:  # the corners and the diagonal pass are seen by the later passes (not the cross passes)
            assert any(not torch.equal(after[3, later], ctx[3, later]) for later, _ in layout[p + 1:])


@pytest.mark.parametrize("cells", [1, 1 << 20])  # two later channels a call, or all of them
def test_the_predicted_bucket_is_the_integer_formula(cells, monkeypatch):
    monkeypatch.setattr(enhance, "PREDICTOR_CELLS", cells)
    sym = torch.from_numpy(_symbols((2, 5, 7, 8), 3)).long()  # a batch of two
    w = _random_predictor(5, 3)
    boxes = torch.nn.functional.conv2d(sym.abs().reshape(-1, 1, 7, 8).float(), torch.ones(1, 1, 3, 3),
                                       padding=1).reshape(sym.shape).long().numpy()
    edges = np.array((1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64, 90, 128))
    got = contexts(sym, ContextRule(1, w)).numpy()
    for c in range(5):
        acc = np.full((2, 7, 8), int(w[c, 0]), dtype=np.int64)
        for j in range(c):
            acc += int(w[c, 1 + j]) * boxes[:, j] + int(w[c, 6 + j]) * sym[:, j].abs().numpy()
        want = np.searchsorted(edges, acc // (1 << PREDICTOR_SHIFT), side="right")  # floor, also below 0
        assert np.array_equal(got[:, c], want)


def test_a_predictor_whose_sums_overflow_int32_is_refused(tmp_path):
    net = Enhancement(CFG4)
    net.predictor.copy_(_random_predictor(CFG4.channels, 0))
    counts = np.ones((CFG4.levels, CFG4.channels, CFG4.contexts, CFG4.alphabet), dtype=np.int64)
    enhancecoding.save_enhancement(tmp_path / "ok.safetensors", net, counts, "0" * 16, {})
    assert enhancecoding.load_enhancement(tmp_path / "ok.safetensors").rule.predictor is not None
    limit = PREDICTOR_LIMIT // (9 * CFG4.radius)  # one box weight this large can overflow
    net.predictor[3, 1] = limit  # channel 3's weight of channel 0's box: its sums reach 2^31
    enhancecoding.save_enhancement(tmp_path / "big.safetensors", net, counts, "0" * 16, {})
    with pytest.raises(VQError, match="big.safetensors: bad enhancement tables \\(predictor weights too large"):
        enhancecoding.load_enhancement(tmp_path / "big.safetensors")


@EVERY_CONFIG
def test_symbols_round_trip_and_skip_cells(tmp_path, cfg):
    layer = _layer(tmp_path / "l.safetensors", "0" * 16, cfg=cfg)
    sym = _symbols((CFG.channels, 13, 17), 1)
    keep = np.ones((13, 17), dtype=bool)
    keep[4:8, 2:9] = False
    sym[:, ~keep] = 0
    for level in range(CFG.levels):
        stream, bits = enhancecoding.encode_symbols(layer, sym, level, keep)
        assert abs(8 * len(stream) - bits) < 0.02 * bits + 64  # within 2 % of ideal
        assert np.array_equal(enhancecoding.decode_symbols(layer, stream, level, keep, "x"), sym)
    # the stream holds the kept cells only: decoded as all kept, it runs out
    stream = enhancecoding.encode_symbols(layer, sym, 0, keep)[0]
    with pytest.raises(VQError, match="corrupt enhancement chunk"):
        enhancecoding.decode_symbols(layer, stream, 0, np.ones_like(keep), "x")


def test_a_damaged_stream_is_one_line_error(tmp_path):
    layer = _layer(tmp_path / "l.safetensors", "0" * 16)
    sym = _symbols((CFG.channels, 12, 12), 2)
    keep = np.ones((12, 12), dtype=bool)
    stream, _ = enhancecoding.encode_symbols(layer, sym, 1, keep)
    for bad in (stream[:len(stream) // 2], stream[:-4], stream + bytes(4), stream[:5]):
        with pytest.raises(VQError, match="x: corrupt enhancement chunk"):
            enhancecoding.decode_symbols(layer, bad, 1, keep, "x")


@NETWORKS
def test_tiled_enhancement_matches_one_tile(tmp_path, cfg):
    layer = _layer(tmp_path / "l.safetensors", "0" * 16, cfg=cfg)
    rgb = make_image(70, 90, 3)
    base = np.clip(rgb.astype(int) + np.random.default_rng(0).integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    steps = layer.net.steps(0.5)
    grid = (18, 24)  # the 72 x 96 padded image in 4x4 cells
    whole = tiling.enhance_encode(layer.net, rgb, base, steps, grid, tile=4096)
    tiled = tiling.enhance_encode(layer.net, rgb, base, steps, grid, tile=32)
    assert np.mean(whole == tiled) > 0.99  # equal but for float near-ties at a rounding boundary
    a = tiling.enhance_decode(layer.net, whole, base, steps, tile=4096)
    b = tiling.enhance_decode(layer.net, whole, base, steps, tile=32)
    assert a.shape == rgb.shape and np.abs(a.astype(int) - b).max() <= 1


@pytest.mark.parametrize("tiny_layer", CONFIGS, ids=CONFIG_IDS, indirect=True)
def test_file_round_trip_flat_cells_and_repack(tiny_layer):
    w, layer = tiny_layer
    rgb = make_image(40, 56, 4)
    rgb[:, :24] = (30, 200, 90)
    img = LoadedImage(rgb, None, "RGB")
    res = codec.compress(w, img, quality=100)
    assert res.enhancement is not None and res.enhancement.model_id == layer.model_id
    dec = codec.decompress(w, res.data)
    assert dec.header.version == 4 and dec.enhancement is not None
    assert (dec.rgb[:, :24] == (30, 200, 90)).all()  # flat cells stay exact over the layer
    assert not dec.enhancement.symbols[:, :, :6].any()  # and hold no symbols
    assert codec.pack(w, dec.indices, 56, 40, flat=dec.flat, enhancement=dec.enhancement) == res.data
    info = vqz.info(res.data)
    assert info["format_version"] == 4 and info["enhancement"]["model_id"] == layer.model_id
    # cut before the enhancement chunk: the base image, flagged truncated
    base = codec.decompress(w, res.data[:len(res.data) - info["enhancement"]["bytes"] - vqz.CHUNK_HEAD_SIZE])
    assert base.truncated and base.enhancement is None
    only_base = codec.compress(w, img, quality=enhanced_rate(100, layer.config.levels)[0], enhance=False).data
    assert np.array_equal(base.rgb, codec.decompress(w, only_base).rgb)


def test_no_layer_below_the_threshold_or_when_disabled(tiny_layer):
    w, _ = tiny_layer
    img = LoadedImage(make_image(32, 40, 5), None, "RGB")
    assert codec.compress(w, img, quality=ENHANCE_FROM).enhancement is None
    assert codec.compress(w, img, quality=100, enhance=False).enhancement is None
    assert vqz.read_header(codec.compress(w, img, quality=100, enhance=False).data).version < 4


@NETWORKS
def test_the_synthesis_makes_the_residual_of_every_pixel(cfg):
    torch.manual_seed(0)
    net = Enhancement(cfg).eval().requires_grad_(False)
    h, w = 9, 11
    feats = torch.randn(1, cfg.width, h, w)
    base = torch.rand(1, 3, 4 * h, 4 * w)
    q = torch.randn(1, cfg.channels, h, w).round()
    out = net.synthesise(q, base, feats, net.steps(1))
    assert out.shape == base.shape
    q[0, :, 6, 8] += 3  # one cell's symbols change its pixels and those near, not the far corner
    changed = (net.synthesise(q, base, feats, net.steps(1)) - out).abs().sum(1)[0] > 0
    assert changed[24:28, 32:36].all() and not changed[:4, :4].any()


def test_a_light_synthesis_is_named_in_the_config_and_an_old_config_has_none():
    assert "light_synthesis" not in CFG4.to_dict()  # a config written before it reads the same
    assert EnhanceConfig(**CFG4.to_dict()) == CFG4 and EnhanceConfig(**CFG_LIGHT.to_dict()) == CFG_LIGHT
    assert CFG_LIGHT.to_dict()["light_synthesis"] is True
    wide, light = Enhancement(CFG4), Enhancement(CFG_LIGHT)
    assert {k for k in wide.state_dict() if not k.startswith("synthesis.")} == \
        {k for k in light.state_dict() if not k.startswith("synthesis.")}
    assert sum(p.numel() for p in light.synthesis.parameters()) != sum(p.numel() for p in wide.synthesis.parameters())


def test_dead_zone_only_moves_symbols_toward_zero():
    net = Enhancement(EnhanceConfig(channels=2, width=4, levels=2, radius=3))
    v = torch.linspace(-5, 5, 201)
    plain, dz = net.quantize(v), net.quantize(v, 0.3)
    assert torch.equal(plain, v.round().clamp(-3, 3))
    assert (dz.abs() <= plain.abs()).all() and (dz * plain >= 0).all()
    widened = (v.abs() > 0.55) & (v.abs() < 0.75)  # rounds to +-1 plainly, to 0 with the dead zone
    assert widened.any() and (plain[widened] != 0).all() and (dz[widened] == 0).all()


def test_permuted_channels_are_the_same_codec_in_another_order():
    torch.manual_seed(3)
    net = Enhancement(CFG)
    with torch.no_grad():
        net.log_step.normal_(0, 0.3)  # steps that differ by channel, so a mismatch shows
    x, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    order = torch.tensor([2, 0, 3, 1])
    steps = net.steps(0.5)
    v = net.analyse(x, b, net.features(b), steps)
    out = net.synthesise(v.round(), b, net.features(b), steps)
    moved = Enhancement(CFG)
    moved.load_state_dict(net.state_dict())
    moved.permute_channels(order)
    steps2 = moved.steps(0.5)
    v2 = moved.analyse(x, b, moved.features(b), steps2)
    torch.testing.assert_close(v2, v[:, order])
    torch.testing.assert_close(moved.synthesise(v.round()[:, order], b, moved.features(b), steps2), out)
    with pytest.raises(ValueError, match="permutation"):
        moved.permute_channels(torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="before fitting the predictor"):
        Enhancement(CFG4).permute_channels(order)


def test_quality_mapping_is_monotone():
    rates = [enhanced_rate(q / 2, 6) for q in range(2 * int(ENHANCE_FROM) + 1, 201)]
    assert enhanced_rate(ENHANCE_FROM, 6) is None
    assert rates[0][1] <= 5 * vqz.LEVEL_ONE and rates[-1][1:] == (0, 0.0)  # from the coarsest to the finest level
    # every step up raises the base or refines the layer, and neither goes back
    assert all(a[0] <= b[0] and a[1] >= b[1] and a[2] >= b[2] and (a[0], -a[1]) < (b[0], -b[1])
               for a, b in zip(rates, rates[1:]))


def test_ladder_deadzone_is_the_ladders_at_every_level():
    # the dead zone a tuned synthesis learns to undo is the one the encoder uses at that level
    for q in range(2 * int(ENHANCE_FROM) + 1, 201):
        _, level, dz = enhanced_rate(q / 2, 6)
        assert ladder_deadzone(level / vqz.LEVEL_ONE / 5) == pytest.approx(dz, abs=1e-3)
    assert ladder_deadzone(0.0) == 0.0 and ladder_deadzone(1.0) == enhanced_rate(ENHANCE_FROM + 1e-9, 6)[2]


def test_steps_of_a_tensor_of_levels_interpolate_as_one_level_does():
    torch.manual_seed(4)
    net = Enhancement(CFG)
    with torch.no_grad():
        net.log_step.normal_(0, 0.5)
    levels = torch.tensor([0.0, 0.25, 1.5, float(CFG.levels - 1)])
    torch.testing.assert_close(net.steps(levels), torch.stack([net.steps(float(v)) for v in levels]))
    whole = torch.tensor([0, CFG.levels - 1])  # trained levels as integers, as training draws them
    torch.testing.assert_close(net.steps(whole), net.steps(whole.float()))


def test_a_dead_zone_per_sample_quantizes_each_as_its_own_number():
    net = Enhancement(CFG)
    v = torch.linspace(-3, 3, 2 * 4 * 5 * 5).reshape(2, 4, 5, 5)
    dz = torch.tensor([0.0, 0.4])
    out = net.quantize(v, dz[:, None, None, None])
    assert torch.equal(out[0], net.quantize(v[:1], 0.0)[0]) and torch.equal(out[1], net.quantize(v[1:], 0.4)[0])
    assert not torch.equal(out[1], net.quantize(v[1:], 0.0)[0])  # the zone moved some symbols


def test_ladder_grid_hull_keeps_only_the_upper_convex_hull():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ladder_grid", ROOT / "tools" / "ladder_grid.py")
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    points = {"a": (0.5, 30.0), "dominated": (0.8, 29.0), "b": (1.0, 33.0), "under the chord": (1.5, 33.5),
              "c": (2.0, 35.0), "d": (3.0, 35.5)}
    assert [k for k, _ in grid.hull(points)] == ["a", "b", "c", "d"]


def test_missing_or_mismatched_layer_is_one_line_error(tiny_layer, tmp_path, monkeypatch):
    w, layer = tiny_layer
    data = codec.compress(w, LoadedImage(make_image(32, 40, 6), None, "RGB"), quality=100).data
    monkeypatch.setenv(WEIGHTS_PATH_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(VQError, match=f"f.vqz: made with enhancement layer {layer.model_id}, and no layer"):
        codec.decompress(w, data, name="f.vqz")
    # a file whose enhancement chunk names a layer of another base
    other = tmp_path / "other"
    other.mkdir()
    stranger = _layer(other / "l.safetensors", "1" * 16)
    monkeypatch.setenv(WEIGHTS_PATH_ENV, os.pathsep.join([str(tmp_path), str(other)]))
    e = vqz.read(data).enhancement
    crafted = _rechunk(data, vqz.pack_enhancement(stranger.model_id, e.level, e.stream, 0))
    with pytest.raises(VQError, match="is for model 1111111111111111"):
        codec.decompress(w, crafted, name="f.vqz")


def test_new_files_use_the_default_layer_and_old_ones_still_find_theirs(tiny_weights, tmp_path, monkeypatch):
    w = load_weights(tiny_weights)
    folder = tmp_path / enhancecoding.ENHANCE_DIR
    folder.mkdir()
    old = _layer(folder / "00older.safetensors", w.model_id, seed=1)  # sorts before default.safetensors
    monkeypatch.setenv(WEIGHTS_PATH_ENV, str(tmp_path))
    img = LoadedImage(make_image(32, 40, 7), None, "RGB")
    before = codec.compress(w, img, quality=100).data
    assert vqz.read(before).enhancement.model_id == old.model_id
    new = _layer(folder / enhancecoding.DEFAULT_LAYER, w.model_id, seed=2)
    assert enhancecoding.find_enhancement(w.model_id) == folder / enhancecoding.DEFAULT_LAYER
    assert vqz.read(codec.compress(w, img, quality=100).data).enhancement.model_id == new.model_id
    assert codec.decompress(w, before).enhancement.model_id == old.model_id


def _rechunk(data: bytes, payload: bytes) -> bytes:
    """data with its last chunk (the enhancement) replaced by payload, CRC fixed."""
    c = vqz.read(data)
    start = len(data) - c.enhancement.size - vqz.CHUNK_HEAD_SIZE
    head = struct.pack("<cBI", b"E", 0, len(payload))
    return data[:start] + head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_a_layer_stores_its_counts_packed_and_an_old_wide_file_compacts_to_the_same_layer(tmp_path):
    from safetensors.torch import load_file, save

    from vqcli.weights import read_safetensors, unpack_counts

    small = _layer(tmp_path / "small.safetensors", "0" * 16)
    assert load_file(str(tmp_path / "small.safetensors"))["stats.counts"].dtype == torch.uint16
    torch.manual_seed(0)
    counts = np.random.default_rng(1).integers(0, 50, (CFG.levels, CFG.channels, CFG.contexts, CFG.alphabet))
    counts[0, 0, 0, CFG.radius] = 1 << 20  # too many for uint16: deflated
    mid = enhancecoding.save_enhancement(tmp_path / "big.safetensors", Enhancement(CFG), counts, "0" * 16, {})
    assert load_file(str(tmp_path / "big.safetensors"))["stats.counts"].dtype == torch.uint8
    big = enhancecoding.load_enhancement(tmp_path / "big.safetensors")
    assert big.model_id == mid and np.array_equal(big.counts, counts)
    # a layer as the first versions stored it: every tensor wide
    for layer, name in ((small, "small"), (big, "big")):
        tensors, meta = read_safetensors(tmp_path / f"{name}.safetensors")
        wide = tmp_path / f"{name}_wide.safetensors"
        wide.write_bytes(save(unpack_counts(wide, tensors, meta),
                              metadata={k: v for k, v in meta.items() if not k.startswith("count_")}))
        size = wide.stat().st_size
        got, before, after = enhancecoding.compact_enhancement(wide)
        assert got == layer.model_id and before == size and after == wide.stat().st_size < size
        again = enhancecoding.load_enhancement(wide)
        assert again.model_id == layer.model_id and np.array_equal(again.counts, layer.counts)


def test_hostile_enhancement_chunks(tiny_layer):
    w, layer = tiny_layer
    data = codec.compress(w, LoadedImage(make_image(32, 40, 7), None, "RGB"), quality=100).data
    e = vqz.read(data).enhancement
    good = vqz.pack_enhancement(e.model_id, e.level, e.stream, 0)
    assert codec.decompress(w, _rechunk(data, good)).enhancement is not None
    cases = {
        "bad stream length or padding": vqz.pack_enhancement(e.model_id, e.level, e.stream, 0)[:-3],
        "of a layer with": vqz.pack_enhancement(e.model_id, 200 * vqz.LEVEL_ONE, e.stream, 0),
        "does not end with": vqz.pack_enhancement(e.model_id, e.level, e.stream[:4], 0),
        "no layer of that id": vqz.pack_enhancement("ab" * 8, e.level, e.stream, 0),
        "corrupt enhancement chunk \\(3 bytes\\)": b"abc",
    }
    for why, payload in cases.items():
        with pytest.raises(VQError, match=why):
            codec.decompress(w, _rechunk(data, payload), name="h.vqz")
    # a stream too short for the symbols a header announces is refused before any work of that size
    with pytest.raises(VQError, match="x: corrupt enhancement chunk \\(4 bytes cannot hold 1000000 symbols\\)"):
        layer.check_payload(4, 10 ** 6, "x")
    padded = good + b"\x01"
    with pytest.raises(VQError, match="bad stream length or padding"):
        codec.decompress(w, _rechunk(data, padded), name="h.vqz")


def test_todays_reader_refuses_a_newer_version():
    data = bytearray((ROOT / "tests" / "golden" / "tiny_static.vqz").read_bytes())
    data[8] = vqz.FORMAT_VERSION + 1
    with pytest.raises(VQError, match=f"unsupported vqz format version {vqz.FORMAT_VERSION + 1}"):
        vqz.read_header(bytes(data))


# -- the shipped layer ---------------------------------------------------------------------------------
needs_layer = pytest.mark.skipif(not SHIPPED_LAYER.exists(), reason="no shipped enhancement layer")


@needs_layer
def test_shipped_layer_lifts_the_top_and_the_ladder_is_monotone():
    w = load_weights(ROOT / "weights" / "default.safetensors")
    layer = enhancecoding.load_enhancement(SHIPPED_LAYER)
    assert layer.base_id == w.model_id
    rgb = make_image(96, 128, 8)
    img = LoadedImage(rgb, None, "RGB")
    points = []
    for q in (ENHANCE_FROM, ENHANCE_FROM + 1, 75, 90, 100):
        res = codec.compress(w, img, quality=q, effort=0)
        points.append((len(res.data), metrics.psnr(rgb, codec.decompress(w, res.data).rgb)))
    assert all(b[0] > a[0] and b[1] > a[1] for a, b in zip(points, points[1:])), points
    assert points[-1][1] > points[0][1] + 3  # the layer adds several dB over the base's top


@needs_layer
def test_shipped_layer_decodes_identically_across_thread_counts():
    w = load_weights(ROOT / "weights" / "default.safetensors")
    data = codec.compress(w, LoadedImage(make_image(64, 80, 9), None, "RGB"), quality=95, effort=0).data
    a, b = (decode_with_threads(w, data, n) for n in (1, 2))
    assert a.enhancement is not None
    assert np.array_equal(a.enhancement.symbols, b.enhancement.symbols) and np.array_equal(a.rgb, b.rgb)


@pytest.mark.parametrize("tiny_layer", CONFIGS, ids=CONFIG_IDS, indirect=True)
def test_thread_count_does_not_change_the_symbols(tiny_layer):
    w, _ = tiny_layer
    img = LoadedImage(make_image(48, 64, 10), None, "RGB")
    out = []
    for n in (1, 2):
        with torch_threads(n):
            out.append(codec.compress(w, img, quality=100).data)
    assert out[0] == out[1]


def test_eval_measures_the_ladder_compress_writes(tiny_layer):
    from vqcli.evaluate import VQ_QUALITIES, Tally, vq_points

    w, _ = tiny_layer
    rgb = make_image(40, 48, 11)
    points = {p.setting: p for p in vq_points(w, rgb, Tally(), effort=0)}
    for q in (VQ_QUALITIES[0], 100):
        data = codec.compress(w, LoadedImage(rgb, None, "RGB"), quality=q, effort=0).data
        assert points[q].bpp == pytest.approx(8 * len(data) / rgb[..., 0].size)
    assert vqz.read_header(codec.compress(w, LoadedImage(rgb, None, "RGB"), quality=100).data).version == 4
