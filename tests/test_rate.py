"""Rate-aware (entropy-constrained) code assignment: the price, its training, its releases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image
from typer.testing import CliRunner

from vqcli.api import compress, decompress
from vqcli.cli import app
from vqcli.config import PRESETS, ModelConfig, TrainConfig
from vqcli.metrics import entropy_bits
from vqcli.model import to_tensor
from vqcli.quantizer import VectorQuantizer, code_bits, nearest_code, squared_distances
from vqcli.train import train
from vqcli.weights import load_weights

TINY = PRESETS["tiny"]


def _tcfg(steps: int, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=8, crop=32, lr=3e-3, warmup=2, workers=0, ckpt_every=1000, val_every=1000)
    return TrainConfig(**{**base, **kw})


def _entropy(idx: torch.Tensor, k: int) -> float:
    return entropy_bits(torch.bincount(idx, minlength=k).numpy())


def test_nearest_code_adds_the_cost_of_each_code() -> None:
    g = torch.Generator().manual_seed(1)
    x, codes, cost = torch.randn(300, 5, generator=g), torch.randn(20, 5, generator=g), torch.rand(20, generator=g) * 3
    brute = torch.stack([(((codes - v) ** 2).sum(1) + cost).argmin() for v in x])
    assert torch.equal(nearest_code(x, codes, chunk=64, cost=cost), brute)
    assert not torch.equal(brute, nearest_code(x, codes))  # the price changes choices


def test_code_bits_are_code_lengths() -> None:
    bits = code_bits(torch.tensor([2.0, 1.0, 1.0, 0.0]), eps=0.0)
    assert torch.allclose(bits[:3], torch.tensor([1.0, 2.0, 2.0]))
    assert math.isinf(float(bits[3]))  # unused without smoothing: never worth choosing
    assert torch.isfinite(code_bits(torch.tensor([2.0, 0.0]), eps=1e-5)).all()


def _train_vq(rate_weight: float) -> tuple[VectorQuantizer, torch.Tensor]:
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=2, codebook_size=16, decay=0.9, rate_weight=rate_weight)
    vq.train()
    for _ in range(150):
        vq(torch.randn(1024, 2))
    vq.eval()
    return vq, torch.randn(4096, 2, generator=torch.Generator().manual_seed(7))


def test_rate_weight_trades_distortion_for_rate() -> None:
    """ECVQ on a Gaussian: the rate-aware quantizer's codes cost fewer bits and its error grows."""
    plain, test = _train_vq(0.0)
    aware, _ = _train_vq(0.5)
    assert "rate_cost" not in plain.state_dict()  # a rate-free model's tensors (and ids) are unchanged
    results = {}
    for name, vq in (("plain", plain), ("aware", aware)):
        idx = vq.encode(test)
        results[name] = (_entropy(idx, 16), float((test - vq.codebook[idx]).pow(2).sum(1).mean()))
    (h0, d0), (h1, d1) = results["plain"], results["aware"]
    assert h1 < h0 - 0.15 and d1 > d0, results
    # A good trade: less error than a plain quantizer of that rate would have by the high-rate law
    # (D ~ 2^(-2R/k) with k = 2 dimensions: one bit less doubles the error).
    assert d1 < d0 * 2 ** (h0 - h1), results
    # The price follows the codes' usage: the cheapest code is the most used.
    idx = aware.encode(test)
    assert int(aware.rate_cost.argmin()) == int(torch.bincount(idx, minlength=16).argmax())
    assert bool((aware.rate_cost > 0).all())


def test_rate_aware_release_encodes_as_trained_and_round_trips(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rate.safetensors"
    res = train(image_dir, out, TINY, _tcfg(30), device="cpu", progress=False, rate_weight=0.3, log_every=10)
    # The log reports the rate being trained down: the entropy of recent code usage, <= log2 K.
    bits = [h["bits"] for h in res.history if "bits" in h]
    assert len(bits) == 3 and all(0 < b <= math.log2(TINY.codebook_size) + 1e-9 for b in bits), bits
    w = load_weights(out)
    assert w.config.rate_weight == 0.3
    stored = w.model.quantizer.layers[0].rate_cost
    assert bool((stored > 0).all())
    assert torch.allclose(stored, res.model.quantizer.layers[0].rate_cost, rtol=1e-3)  # fp16 in the file
    # Encoding pays the price: priced so that one rarely nearest code is cheaper than any other
    # by more than every distance margin, the encoder picks it everywhere.
    x = to_tensor(make_image(64, 96, 3))
    z = w.model.latent(x).permute(0, 2, 3, 1).reshape(-1, TINY.latent_dim)
    layer = w.model.quantizer.layers[0]
    nearest = nearest_code(z, layer.codebook)
    cheap = int(torch.bincount(nearest, minlength=TINY.codebook_size).argmin())
    d = squared_distances(z, layer.codebook)
    layer.rate_cost.fill_(float((d[:, cheap] - d.min(1).values).max()) + 1.0)
    layer.rate_cost[cheap] = 0.0
    assert bool((nearest != cheap).any())
    assert torch.equal(layer.encode(z), torch.full_like(nearest, cheap))
    # The codec needs nothing new: a file decodes with the indices the encoder chose.
    rgb = make_image(40, 56, 4)
    data = compress(rgb, weights=out, stages=TINY.stages)
    assert np.asarray(decompress(data, weights=out)).shape == rgb.shape


def test_init_may_add_or_drop_the_rate_price(image_dir: Path, tiny_weights: Path, tmp_path: Path) -> None:
    aware = tmp_path / "aware.safetensors"
    train(image_dir, aware, PRESETS["cpu"], _tcfg(3, lr=1e-5), device="cpu", progress=False, init=tiny_weights,
          rate_weight=0.2)
    w = load_weights(aware)
    assert w.config == ModelConfig(**{**TINY.__dict__, "rate_weight": 0.2})
    plain = tmp_path / "plain.safetensors"
    train(image_dir, plain, PRESETS["cpu"], _tcfg(3, lr=1e-5), device="cpu", progress=False, init=aware,
          rate_weight=0.0)
    back = load_weights(plain)
    assert back.config == TINY and "quantizer.layers.0.rate_cost" not in back.model.state_dict()
    # Without the option, fine-tuning keeps the starting weights' rate weight.
    again = tmp_path / "again.safetensors"
    train(image_dir, again, PRESETS["cpu"], _tcfg(2, lr=1e-5), device="cpu", progress=False, init=aware)
    assert load_weights(again).config.rate_weight == 0.2


@pytest.mark.parametrize("args, message", [
    (["--rate-weight", "nan"], "--rate-weight nan"),
    (["--rate-weight", "-1"], "--rate-weight -1"),
    (["--rate-weight", "0.1", "--resume", "x.ckpt.safetensors"], "--resume"),
])
def test_cli_rate_weight_errors(image_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "o.safetensors"
    r = CliRunner().invoke(app, ["train", str(image_dir), "-o", str(out), *args])
    assert r.exit_code == 2 and message in r.stderr and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1


def test_config_refuses_a_bad_rate_weight() -> None:
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate_weight"):
            ModelConfig(rate_weight=bad)
    assert np.isclose(ModelConfig.from_json(ModelConfig(rate_weight=0.05).to_json()).rate_weight, 0.05)
