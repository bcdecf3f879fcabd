"""The encoder's search (--effort): a beam search over the RVQ stages, with bits priced by the
entropy model's stage-to-stage tables at the stage map's trade of bits for error."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import make_image

from vqcli import codec, stagemap
from vqcli.errors import UsageError
from vqcli.images import LoadedImage
from vqcli.quantizer import ResidualVQ
from vqcli.rate import EFFORTS
from vqcli.weights import load_weights


def _rvq(stages: int = 3, k: int = 16, dim: int = 6, seed: int = 0) -> ResidualVQ:
    """A quantizer with random codebooks, each stage's smaller than the last (as trained ones are)."""
    g = torch.Generator().manual_seed(seed)
    q = ResidualVQ(dim, stages, k).eval()
    for s, layer in enumerate(q.layers):
        layer.codebook.copy_(torch.randn(k, dim, generator=g) * 0.5 ** s)
    return q


def _cost(q: ResidualVQ, x: torch.Tensor, path: tuple[int, ...], bits, price) -> torch.Tensor:
    """The search's objective for one path of codes, for every vector of x."""
    r = x - sum(q.layers[s].lookup(torch.tensor(c)) for s, c in enumerate(path))
    total = r.pow(2).sum(-1)
    if bits is not None:
        b = bits[0][path[0]] + sum(bits[s][path[s - 1], path[s]] for s in range(1, len(path)))
        total = total + price * b
    return total


def test_beam_of_one_is_the_greedy_encoder() -> None:
    q = _rvq()
    x = torch.randn(300, 6)
    assert torch.equal(q.beam_encode(x, 3, 1), q.encode(x, 3))


@pytest.mark.parametrize("priced", [False, True])
def test_full_beam_finds_the_best_two_stage_path(priced: bool) -> None:
    """With a beam as wide as the codebook, two stages are searched exhaustively: the result is
    the brute-force optimum of squared error (plus priced bits)."""
    k = 8
    q = _rvq(stages=2, k=k)
    x = torch.randn(200, 6)
    g = torch.Generator().manual_seed(1)
    bits = [torch.rand(k, generator=g) * 6, torch.rand(k, k, generator=g) * 6] if priced else None
    price = torch.rand(200, generator=g) * 0.3 if priced else None
    found = q.beam_encode(x, 2, k, bits, price)
    costs = torch.stack([_cost(q, x, p, bits, price) for p in itertools.product(range(k), repeat=2)], 1)
    best = costs.min(1).values
    got = costs.gather(1, (found[:, 0] * k + found[:, 1])[:, None])[:, 0]
    assert torch.allclose(got, best, atol=1e-5)
    if not priced:  # and greedy misses the optimum somewhere, or the test would prove nothing
        greedy = q.encode(x, 2)
        assert (costs.gather(1, (greedy[:, 0] * k + greedy[:, 1])[:, None])[:, 0] > best + 1e-5).any()


def test_wider_beam_lowers_the_error_and_a_price_lowers_the_bits() -> None:
    q = _rvq(stages=4, k=16)
    x = torch.randn(2000, 6)
    err = {}
    for beam in (1, 4, 16):
        idx = q.beam_encode(x, 4, beam)
        err[beam] = (x - q.decode(idx)).pow(2).sum(-1).mean()
    assert err[16] < err[4] < err[1]
    # Bits that make code 0 of every stage free: a price moves choices towards it.
    bits = [torch.full((16,), 8.0).index_fill_(0, torch.tensor(0), 0.0)]
    bits += [torch.full((16, 16), 8.0).index_fill_(1, torch.tensor(0), 0.0) for _ in range(3)]
    free = [(q.beam_encode(x, 4, 4, bits, torch.full((2000,), p)) == 0).float().mean() for p in (0.0, 0.01, 0.1)]
    assert free[0] < free[1] < free[2]


def test_beam_is_chunked_transparently_and_checks_its_price() -> None:
    q = _rvq()
    x = torch.randn(101, 6)
    bits = [torch.rand(16) * 4] + [torch.rand(16, 16) * 4 for _ in range(2)]
    price = torch.rand(101) * 0.1
    assert torch.equal(q.beam_encode(x, 3, 4, bits, price, chunk=7), q.beam_encode(x, 3, 4, bits, price))
    with pytest.raises(ValueError, match="price"):
        q.beam_encode(x, 3, 4, bits)


def test_bit_tables_price_as_symbol_bits(tiny_weights) -> None:
    """Stage s > 1 of symbol_bits is the stage's table at (previous code, code); stage 1 of the
    static model is its static table (the context model's stage 1 also looks up)."""
    w = load_weights(tiny_weights)
    idx = codec.encode_indices(w, make_image(48, 64, 3))
    for kind in ("static", "context"):
        em = codec.entropy_model(w, kind)
        tables, sym = em.bit_tables(), em.symbol_bits(idx)
        for s in range(1, idx.shape[0]):
            assert np.allclose(tables[s][idx[s - 1], idx[s]], sym[s])
        if kind == "static":
            assert np.allclose(tables[0][idx[0]], sym[0])


def test_price_is_the_stage_maps_trade() -> None:
    """On an image with the same residual everywhere, every block weighs 1: a bit is worth
    lambda x the mean residual after REF_STAGE stages, at every position."""
    err = np.stack([np.full((6, 10), 2.0 ** -s) for s in range(6)])
    p = stagemap.price(err, 0.1)
    assert p.shape == (6, 10)
    assert np.allclose(p, 0.1 * 2.0 ** -(stagemap.REF_STAGE - 1))
    err[:, :2, :2] *= 16  # a busy block: its error weighs less, so its bits are dearer
    p = stagemap.price(err, 0.1)
    assert p[0, 0] > p[5, 9]


def _objective(enc: codec.ImageEncoder, indices: np.ndarray, price: np.ndarray | None) -> float:
    """Squared latent error of indices [n, h, w] (-1: absent) against enc's latent, plus their
    bits at `price`: what the search minimises."""
    err = (enc.latent - enc.weights.model.quantizer.decode(torch.from_numpy(indices).permute(1, 2, 0)))
    total = err.pow(2).sum(-1).numpy()
    if price is not None:
        tables = enc.em.bit_tables()
        for s in range(indices.shape[0]):
            cur = np.maximum(indices[s], 0)
            b = tables[0][cur] if s == 0 else tables[s][np.maximum(indices[s - 1], 0), cur]
            total = total + price * np.where(indices[s] >= 0, b, 0)
    return float(total.sum())


@pytest.fixture(scope="module")
def photo(tiny_weights):
    return load_weights(tiny_weights), LoadedImage(make_image(96, 128, 7), None, "RGB")


def test_effort_searches_within_the_same_stage_map(photo) -> None:
    """Effort 0 codes the greedy indices; higher efforts keep the stage map and lower the
    search's objective against them, and their files decode to what they coded."""
    w, image = photo
    em = codec.entropy_model(w)
    greedy = codec.ImageEncoder(w, em, image, "RGB", effort=0)
    assert greedy.latent is None
    q = 60
    base = greedy.adaptive(q)
    kept = (base.indices >= 0).sum(0)
    assert np.array_equal(base.indices, stagemap.apply(greedy.idx[:base.indices.shape[0]], kept))
    for effort in range(1, len(EFFORTS)):
        enc = codec.ImageEncoder(w, em, image, "RGB", effort=effort)
        coded = enc.adaptive(q)
        assert coded.stage_map == base.stage_map
        assert np.array_equal(coded.indices >= 0, base.indices >= 0)
        price = EFFORTS[effort][1] * stagemap.price(enc.err, stagemap.lam(q))
        assert _objective(enc, coded.indices, price) < _objective(enc, base.indices, price)
        assert np.array_equal(codec.decompress(w, coded.data).indices, coded.indices)
        # --stages N: no price, only the error to lower
        assert _objective(enc, enc.uniform(3).indices, None) < _objective(enc, greedy.uniform(3).indices, None)


def test_effort_0_is_the_greedy_encoder(photo) -> None:
    w, image = photo
    res = codec.compress(w, image, stages=3, effort=0)
    assert res.effort == 0 and res.to_dict()["effort"] == 0
    assert np.array_equal(codec.decompress(w, res.data).indices, codec.encode_indices(w, image.rgb)[:3])


def test_bad_effort_is_a_usage_error(photo) -> None:
    import vqcli

    w, image = photo
    for bad in (-1, len(EFFORTS)):
        with pytest.raises(UsageError, match=f"effort {bad}: expected 0 to {len(EFFORTS) - 1}"):
            codec.compress(w, image, effort=bad)
        with pytest.raises(UsageError, match="effort"):
            vqcli.compress(image.rgb, weights=w, effort=bad)


def test_cli_effort(tiny_weights, tmp_path) -> None:
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from vqcli.cli import app

    src = tmp_path / "in.png"
    Image.fromarray(make_image(48, 64, 2)).save(src)
    base = ["compress", str(src), "--weights", str(tiny_weights), "--device", "cpu"]
    for effort in range(len(EFFORTS)):
        r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / f"e{effort}.vqz"), "--effort", str(effort), "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["effort"] == effort
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "e0.vqz"), "-f", "--effort", "0"])
    assert r.exit_code == 0 and "effort" in r.stdout and "0 (greedy codes)" in r.stdout
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "bad.vqz"), "--effort", str(len(EFFORTS))])
    assert r.exit_code == 2 and not (tmp_path / "bad.vqz").exists()
