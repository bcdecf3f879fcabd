"""Stage maps: per-block stage counts chosen for rate and distortion, their coding, and files
that carry them (format version 2)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import decode_with_threads, make_image
from PIL import Image
from test_entropy_spatial import K, S, _grids, _stats
from typer.testing import CliRunner

from vqcli import format as vqz
from vqcli import stagemap
from vqcli.cli import app
from vqcli.codec import compress, decompress, encode_indices, pack
from vqcli.entropy import LEFT, PREV, UP, build_model
from vqcli.errors import VQError
from vqcli.images import LoadedImage
from vqcli.rate import DEFAULT_QUALITY, check_quality
from vqcli.weights import load_weights


@pytest.fixture(scope="module")
def weights(tiny_weights):
    return load_weights(tiny_weights, "cpu")


def _random_counts(rng: np.random.Generator, hb: int, wb: int, stages: int) -> np.ndarray:
    counts = rng.integers(1, stages + 1, (hb, wb))
    counts.ravel()[rng.integers(counts.size)] = stages  # some block keeps every stage
    return counts


# -- choosing --------------------------------------------------------------------------------------
def test_choice_spends_stages_where_they_pay():
    """Blocks whose residual keeps falling get more stages than blocks that are done after one;
    more lambda never adds stages; lambda 0 keeps every stage, a huge one keeps one."""
    s, h, w = 6, 4, 8
    busy = np.geomspace(100.0, 1.0, s)[:, None, None] * np.ones((s, h, w))  # residual falls at every stage
    flat = np.concatenate([[1.0], np.full(s - 1, 0.99)])[:, None, None] * np.ones((s, h, w))  # done after 1
    err = np.where(np.arange(w)[None, None, :] < 4, busy, flat)
    bits = np.full((s, h, w), 6.0)
    mid = stagemap.choose(err, bits, 0.5)
    assert mid.shape == (2, 4)
    assert (mid[:, :2] > 1).all() and (mid[:, 2:] == 1).all()
    assert (stagemap.choose(err, bits, 0.0)[:, :2] == s).all()
    assert (stagemap.choose(err, bits, 1e9) == 1).all()
    # lambda is relative to the image: scaling every residual scales nothing
    assert np.array_equal(stagemap.choose(1000 * err, bits, 0.5), mid)
    previous = None
    for lam in np.geomspace(1e-3, 1e3, 13):
        counts = stagemap.choose(err, bits, lam)
        assert previous is None or (counts <= previous).all()
        previous = counts


def test_edge_blocks_and_expansion():
    counts = np.array([[1, 3], [2, 4]])
    per = stagemap.expand(counts, (3, 3), 2)  # a 3x3 grid in 2x2 blocks: the edge blocks are cut
    assert per.tolist() == [[1, 1, 3], [1, 1, 3], [2, 2, 4]]
    idx = np.arange(4 * 9).reshape(4, 3, 3)
    kept = stagemap.apply(idx, per)
    assert ((kept >= 0).sum(0) == per).all() and (kept[kept >= 0] == idx[kept >= 0]).all()
    assert stagemap.lam(0) > stagemap.lam(DEFAULT_QUALITY) > stagemap.lam(100)
    with pytest.raises(VQError, match="quality 101"):
        check_quality(101)


# -- the map chunk -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,block,stages", [((9, 13), 2, 10), ((1, 1), 2, 1), ((5, 7), 1, 3), ((64, 40), 4, 12)])
def test_map_round_trip(shape, block, stages):
    rng = np.random.default_rng(stages)
    hb, wb = -(-shape[0] // block), -(-shape[1] // block)
    for counts in (_random_counts(rng, hb, wb, stages), np.full((hb, wb), stages)):
        payload = stagemap.encode(counts, block)
        back, b = stagemap.decode(payload, shape, stages)
        assert b == block and np.array_equal(back, counts)


def test_map_uses_few_bits_for_a_skewed_map():
    counts = np.ones((40, 40), dtype=np.int64)
    counts[:4, :4] = 5  # most blocks stop after one stage
    payload = stagemap.encode(counts)
    assert len(payload) < 1 + 2 * 4 + 4 * 40  # far less than a byte per block


def test_corrupt_maps_are_one_line_errors():
    rng = np.random.default_rng(1)
    counts = _random_counts(rng, 5, 7, 6)
    payload = stagemap.encode(counts)
    cases = {
        "truncated": payload[:-4],
        "a surplus word": payload + b"\0\0\0\1",
        "not whole words": payload + b"\0",
        "block side 0": b"\0" + payload[1:],
        "too short": payload[:3],
    }
    for what, bad in cases.items():
        with pytest.raises(VQError, match="^x.vqz: corrupt stage map") as e:
            stagemap.decode(bad, (10, 14), 6, "x.vqz")
        assert "\n" not in str(e.value), what
    # a map that never reaches the stages its header announces
    with pytest.raises(VQError, match="no block keeps all 7 stages"):
        stagemap.decode(struct.pack("<B6H", 2, 0, 0, 0, 0, 0, 0), (10, 14), 7, "x.vqz")


# -- coding a stage over part of the grid -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["static", "context", "spatial"])
def test_stages_coded_over_their_blocks_only(kind):
    rng = np.random.default_rng(3)
    grids = _grids(rng, 20)
    em = build_model(_stats(grids, (UP | LEFT, PREV | UP | LEFT, PREV | LEFT)), kind)
    for g in grids[:5]:
        counts = _random_counts(rng, *(-(-n // 2) for n in g.shape[1:]), S)
        per = stagemap.expand(counts, g.shape[1:])
        masked = stagemap.apply(g, per)
        ideal: list[float] = []
        payloads = em.encode_stages(masked.copy(), ideal)
        full = em.encode_stages(g.copy())
        assert sum(map(len, payloads)) < sum(map(len, full))
        out = np.empty_like(g)
        for s in range(S):
            active = None if s == 0 else per > s
            out[s] = em.decode_stage(s, payloads[s], g.shape[1:], out[s - 1] if s else None, active=active)
        assert np.array_equal(out, masked)
        # the ideal size counts the coded indices only, and the coder comes within a few words of it
        assert all(8 * len(p) <= b + 96 for p, b in zip(payloads, ideal))
    assert K == em.codebook


def test_absent_index_adds_nothing(weights):
    idx = torch.from_numpy(encode_indices(weights, make_image(24, 40, 3)))[None]  # [1, S, h, w]
    model = weights.model
    cut = idx.clone()
    cut[:, 1:] = -1
    assert torch.equal(model.latent_from_indices(cut), model.latent_from_indices(idx[:, :1]))
    assert torch.equal(model.decode(cut), model.decode(idx[:, :1]))


# -- files -----------------------------------------------------------------------------------------------
def _busy_image() -> np.ndarray:
    """Half smooth (a gentle ramp, no flat cell), half detailed: a stage map keeps more stages on
    the right."""
    rgb = make_image(64, 96, 5)
    rgb[:, :48] = (110 + np.arange(48) // 2)[None, :, None]
    return rgb


def test_stage_map_file(shipped):
    # the shipped model: a few dozen steps of the tiny one may find every stage everywhere cheaper
    # than any map (stagemap.choose)
    weights = shipped
    rgb = _busy_image()
    res = compress(weights, LoadedImage(rgb, None, "RGB"), quality=5, effort=0)  # greedy: the indices below
    assert vqz.read_header(res.data).version == 2 and res.stage_map_bytes and res.quality == 5
    assert res.stage_coding[0].coverage == 1.0 and res.stage_coding[-1].coverage < 1.0
    dec = decompress(weights, res.data)
    kept = dec.indices >= 0
    assert kept[0].all() and not kept.all()
    full = encode_indices(weights, rgb)[:dec.stages]
    assert np.array_equal(dec.indices[kept], full[kept])
    # the decoder only sums the stages each position keeps
    assert np.array_equal(dec.rgb, decompress(weights, pack(weights, dec.indices, 96, 64)).rgb)
    assert pack(weights, dec.indices, 96, 64) == res.data  # the same bytes again
    # a prefix, asked for or cut at a chunk boundary, decodes the same stages
    first = decompress(weights, res.data, stages=1)
    sizes = dict(vqz.read(res.data).chunk_sizes)
    cut = vqz.HEADER_SIZE + sizes["stage map"] + sizes["stage 1"]
    assert np.array_equal(decompress(weights, res.data[:cut]).rgb, first.rgb)
    assert np.array_equal(first.indices[0], dec.indices[0])
    # uniform stages stay a format-1 file
    assert vqz.read_header(compress(weights, LoadedImage(rgb, None, "RGB"), stages=2).data).version == 1


def test_stage_map_decode_is_identical_across_thread_counts(weights):
    data = compress(weights, LoadedImage(_busy_image(), None, "RGB"), quality=5).data
    a, b = (decode_with_threads(weights, data, n) for n in (1, 2))
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.rgb, b.rgb)


def _rechunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """data with the chunk of `kind` given a new payload (valid CRC)."""
    c = vqz.read(data)
    pos = vqz.HEADER_SIZE
    out = [data[:pos]]
    while pos < len(data):
        k, i, n, _ = struct.unpack_from("<cBII", data, pos)
        body = payload if k == kind else data[pos + vqz.CHUNK_HEAD_SIZE:pos + vqz.CHUNK_HEAD_SIZE + n]
        head = struct.pack("<cBI", k, i, len(body))
        out.append(head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body)
        pos += vqz.CHUNK_HEAD_SIZE + n
    assert c.stage_map is not None
    return b"".join(out)


def test_hostile_stage_maps(shipped):
    weights = shipped
    res = compress(weights, LoadedImage(_busy_image(), None, "RGB"), quality=5)
    good = vqz.read(res.data).stage_map
    bad_map = _rechunk(res.data, b"M", good[:1] + b"\xff\xff" * (res.stages - 1))  # every block keeps every stage
    with pytest.raises(VQError, match="^m.vqz: corrupt stage [2-9]"):  # ... which the stage chunks cannot hold
        decompress(weights, bad_map, name="m.vqz")
    with pytest.raises(VQError, match="^m.vqz: corrupt stage map"):
        decompress(weights, _rechunk(res.data, b"M", good + b"\0\0\0\0"), name="m.vqz")
    future = bytearray(res.data)
    future[8] = 5
    with pytest.raises(VQError, match="unsupported vqz format version 5 \\(this vq reads versions 1 to 4\\)"):
        decompress(weights, bytes(future), name="m.vqz")


def test_cli_quality(tiny_weights, tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(_busy_image()).save(src)
    run = CliRunner().invoke
    # the shipped model: a few dozen steps of the tiny one may keep every stage everywhere (no map)
    r = run(app, ["compress", str(src), "-q", "30", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["quality"] == 30 and info["rate"] == "--quality 30" and info["stage_map_bytes"] > 0
    assert [s["coverage"] for s in info["stage_stats"]][0] == 1.0
    r = run(app, ["info", str(tmp_path / "a.vqz")])
    assert r.exit_code == 0 and "stage map" in r.stdout and "format version  2" in r.stdout
    r = run(app, ["compress", str(src), "--weights", str(tiny_weights), "-q", "120", "-f"])
    assert r.exit_code == 2 and "--quality 120: expected 0 to 100" in r.output
    r = run(app, ["compress", str(src), "--weights", str(tiny_weights), "-f", "--device", "cpu"])
    assert r.exit_code == 0 and "quality 45 (default)" in r.stdout


def test_a_small_images_map_never_outweighs_keeping_its_deepest_stage_everywhere():
    """On a tiny image the map can cost more than the indices it drops: the encoder then keeps the
    deepest stage everywhere, more stages in fewer bytes, so quality 0 is never larger than 100.
    (The committed golden tiny model: fixed weights, so the case does not depend on training.)"""
    weights = load_weights(Path(__file__).parent / "golden" / "tiny.safetensors")
    for seed, (h, w) in enumerate([(24, 40), (32, 48), (40, 64), (24, 40)]):
        image = LoadedImage(make_image(h, w, seed), None, "RGB")
        low, high = (compress(weights, image, quality=q) for q in (0, 100))
        assert len(low.data) <= len(high.data), (seed, len(low.data), len(high.data))
