"""The spatial entropy model: integer product-of-experts tables, diagonal decoding, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image, torch_threads
from test_hostile import crafted, measured

from vqcli import format as vqz
from vqcli.codec import compress, decompress, entropy_model
from vqcli.entropy import (
    CONTEXT_STAT,
    EXPERTS_STAT,
    LEFT,
    LEFT_STAT,
    PREV,
    UP,
    UP_STAT,
    SpatialModel,
    build_model,
    context_counts,
    neighbour_counts,
)
from vqcli.errors import VQError
from vqcli.images import LoadedImage
from vqcli.weights import load_weights

K, S = 16, 3


def _grids(rng: np.random.Generator, n: int, h: int = 12, w: int = 20) -> list[np.ndarray]:
    """Index grids [S, h, w] with horizontal runs (a left neighbour predicts well) and stages
    that follow the previous one (a previous-stage code predicts well)."""
    out = []
    for _ in range(n):
        g = np.empty((S, h, w), dtype=np.int64)
        base = rng.integers(0, K, (h, 1)).repeat(w, 1)
        flip = rng.random((h, w)) < 0.15
        g[0] = np.where(flip, rng.integers(0, K, (h, w)), base)
        for s in range(1, S):
            g[s] = np.where(rng.random((h, w)) < 0.3, rng.integers(0, K, (h, w)), (g[s - 1] * 3 + s) % K)
        out.append(g)
    return out


def _stats(grids: list[np.ndarray], experts: tuple[int, ...]) -> dict:
    hist = np.stack([np.bincount(np.concatenate([g[s].ravel() for g in grids]), minlength=K) for s in range(S)])
    up = sum(neighbour_counts(g, K)[0] for g in grids)
    left = sum(neighbour_counts(g, K)[1] for g in grids)
    return {"histogram": hist, CONTEXT_STAT: sum(context_counts(g, K) for g in grids), UP_STAT: up,
            LEFT_STAT: left, EXPERTS_STAT: np.array(experts, dtype=np.int32)}


def test_round_trip_every_expert_set_and_shape():
    rng = np.random.default_rng(0)
    grids = _grids(rng, 20)
    for experts in [(UP, PREV | UP, PREV | LEFT), (UP | LEFT, PREV | UP | LEFT, LEFT), (0, PREV, UP | LEFT)]:
        em = build_model(_stats(grids, experts))
        assert isinstance(em, SpatialModel) and em.kind == "spatial"
        for h, w in [(12, 20), (1, 9), (9, 1), (1, 1), (7, 30)]:
            g = _grids(rng, 1, h, w)[0]
            for s in range(S):
                prev = g[s - 1] if s else None
                payload = em.encode_stage(s, g[s], prev)
                assert np.array_equal(em.decode_stage(s, payload, (h, w), prev), g[s]), (experts, h, w, s)


def test_product_tables_are_integer_normalised_and_capped():
    em = build_model(_stats(_grids(np.random.default_rng(1), 20), (UP | LEFT, PREV | UP | LEFT, PREV)))
    g = _grids(np.random.default_rng(2), 1)[0]
    for s in range(2):  # the stages with a neighbour expert
        f = np.concatenate([b for _, b in em.freq_blocks(s, g[s], g[s - 1] if s else None)])
        assert f.dtype == np.int64 and (f >= 1).all() and (f.sum(1) == em.total).all()
        # The cap: no code gets more than about half the mass, so each index costs >= ~1 bit.
        assert f.max() <= em.total // 2 + em.codebook + 1
        assert em.min_symbol_bits(s) > 0.9


def test_a_missing_neighbour_is_an_expert_left_out():
    # the first row has no up neighbour: its tables are those of a model without the up expert
    grids = _grids(np.random.default_rng(3), 20)
    with_up = build_model(_stats(grids, (LEFT, PREV | UP | LEFT, PREV)))
    without = build_model(_stats(grids, (LEFT, PREV | LEFT, PREV)))
    g = _grids(np.random.default_rng(4), 1)[0]
    a, b = (np.concatenate([f for _, f in em.freq_blocks(1, g[1], g[0])]) for em in (with_up, without))
    first_row = np.flatnonzero(np.lexsort((np.mgrid[:12, :20][0].ravel(), np.add(*np.mgrid[:12, :20]).ravel())) < 20)
    assert np.array_equal(a[first_row], b[first_row]) and not np.array_equal(a, b)


def test_spatial_saves_bits_where_neighbours_predict():
    rng = np.random.default_rng(3)
    train, test = _grids(rng, 40), _grids(rng, 5)
    # Stage 1 has runs along rows: up + left beat the context model's up alone. Later stages
    # follow the previous stage only: there the spatial model keeps PREV and codes alike.
    stats = _stats(train, (UP | LEFT, PREV, PREV))
    spatial, context = build_model(stats, "spatial"), build_model(stats, "context")
    for s in range(S):
        bits = {m.kind: sum(m.ideal_bits(s, g[s], g[s - 1] if s else None) for g in test) for m in (spatial, context)}
        if s == 0:
            assert bits["spatial"] < 0.9 * bits["context"], (s, bits)
        else:
            assert bits["spatial"] == pytest.approx(bits["context"]), (s, bits)


def test_blocks_cover_every_position_in_order(monkeypatch):
    """The encoder builds tables BLOCK positions at a time (bounded memory at any image size):
    the stream must not depend on the block split."""
    import vqcli.entropy as entropy

    em = build_model(_stats(_grids(np.random.default_rng(5), 10), (UP | LEFT, PREV | UP | LEFT, PREV)))
    g = _grids(np.random.default_rng(6), 1, 23, 31)[0]
    whole = [em.encode_stage(s, g[s], g[s - 1] if s else None) for s in range(S)]
    bits = [em.ideal_bits(s, g[s], g[s - 1] if s else None) for s in range(S)]
    monkeypatch.setattr(entropy, "BLOCK", 50)  # 23 x 31 = 713 positions: 15 blocks, the last partial
    assert [em.encode_stage(s, g[s], g[s - 1] if s else None) for s in range(S)] == whole
    assert [em.ideal_bits(s, g[s], g[s - 1] if s else None) for s in range(S)] == pytest.approx(bits)
    # The encoder's one-pass size (what compress reports) equals ideal_bits.
    assert [em.code_stage(s, g[s], g[s - 1] if s else None) for s in range(S)] == \
        [(w, pytest.approx(b)) for w, b in zip(whole, bits)]
    starts = [i for i, _ in em.freq_blocks(1, g[1], g[0], reverse=True)]
    assert starts == list(range(700, -1, -50))


def test_build_model_names_what_is_missing():
    stats = _stats(_grids(np.random.default_rng(4), 3), (UP, UP, UP))
    assert build_model(stats).kind == "spatial"
    assert build_model({k: v for k, v in stats.items() if k != EXPERTS_STAT}).kind == "context"
    with pytest.raises(VQError, match="context_experts"):
        build_model({k: v for k, v in stats.items() if k != EXPERTS_STAT}, "spatial")
    with pytest.raises(VQError, match="context_left"):
        build_model({k: v for k, v in stats.items() if k != LEFT_STAT}, "spatial")
    with pytest.raises(VQError, match="masks"):
        build_model({**stats, EXPERTS_STAT: np.array([8, 0, 0], dtype=np.int32)}, "spatial")


def test_files_are_identical_and_decode_identically_across_thread_counts(tiny_weights):
    w = load_weights(tiny_weights)
    assert entropy_model(w).kind == "spatial"  # vq train collects the spatial counts
    img = LoadedImage(make_image(72, 88, 9), None, "RGB")
    out = {}
    for n in (1, 2):
        with torch_threads(n):
            data = compress(w, img, stages=3).data
            dec = decompress(w, data)
        out[n] = (data, dec.indices, dec.rgb)
    assert out[1][0] == out[2][0] and vqz.read(out[1][0]).header.entropy == "spatial"
    assert np.array_equal(out[1][1], out[2][1]) and np.array_equal(out[1][2], out[2][2])


@pytest.mark.parametrize("payload", [b"", b"\x01\0\0\0", b"\xff\xff\xff\xff"])
def test_52_byte_40_megapixel_spatial_file_is_refused_quickly(tiny_weights, payload):
    w = load_weights(tiny_weights)
    data = crafted(w, 4096, 10000, payload, "spatial")
    err, dt, peak = measured(lambda: decompress(w, data, name="bomb.vqz"))
    assert isinstance(err, VQError) and "bomb.vqz: corrupt stage 1 chunk" in str(err), err
    assert dt < 1.0 and peak < 300e6, (dt, peak)


def test_extreme_counts_do_not_overflow():
    """A code almost never seen (static frequency 1) that every expert predicts strongly: the
    capped ratios keep the product inside int64, so the tables stay sane (and round-trip)."""
    grids = _grids(np.random.default_rng(7), 10)
    stats = _stats(grids, (UP | LEFT, PREV | UP | LEFT, PREV | UP | LEFT))
    k = K - 1
    stats["histogram"] = stats["histogram"].copy()
    stats["histogram"][:, k] = 0  # code k: static frequency 1
    for name in (CONTEXT_STAT, UP_STAT, LEFT_STAT):
        stats[name] = stats[name].copy()
        stats[name][:, :, k] = 10**6  # ... and every context predicts it
    em = build_model(stats)
    g = np.full((S, 6, 7), k, dtype=np.int64)
    for s in range(S):
        prev = g[s - 1] if s else None
        f = np.concatenate([b for _, b in em.freq_blocks(s, g[s], prev)])
        assert (f >= 1).all() and (f.sum(1) == em.total).all()
        # The predicted code stays the most probable (but at stage 1's first position: no context there).
        assert (f.argmax(1)[1 if s == 0 else 0:] == k).all()
        assert np.array_equal(em.decode_stage(s, em.encode_stage(s, g[s], prev), g[s].shape, prev), g[s])
