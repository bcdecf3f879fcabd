"""Widening a trained model (vqcli.widen): the same codes and images at the start, then training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_image
from typer.testing import CliRunner

from vqcli.cli import app
from vqcli.config import PRESETS, TrainConfig
from vqcli.errors import VQError
from vqcli.model import VQVAE, to_tensor
from vqcli.train import train
from vqcli.weights import load_weights
from vqcli.widen import check_widening, widen_into

TINY = PRESETS["tiny"]
WIDE = dataclasses.replace(TINY, channels=(12, 16, 24), latent_dim=12, stages=5)


def test_widened_model_codes_and_decodes_as_the_trained_one(tiny_weights):
    w = load_weights(tiny_weights)
    torch.manual_seed(0)
    wide = VQVAE(WIDE).eval()
    before = [p.clone() for p in wide.parameters()]
    assert widen_into(wide, w.model) == TINY.stages
    x = to_tensor(make_image(48, 64, 9))
    with torch.no_grad():
        old, new = w.model.encode(x), wide.encode(x)
        assert torch.equal(new[:, :TINY.stages], old)
        for s in range(1, TINY.stages + 1):  # equal up to float summation order (wider convs add zeros)
            assert (wide.decode(new[:, :s]) - w.model.decode(old[:, :s])).abs().max() < 1e-5
        # The new latent dimensions carry signal (the encoder's new rows are not zero), for training to use.
        assert wide.latent(x)[:, TINY.latent_dim:].abs().max() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, wide.parameters()))
    assert not bool(wide.quantizer.layers[TINY.stages].initialised)  # new stages: k-means on their first batch


@pytest.mark.parametrize("change", [dict(stem=4, channels=(12, 24)), dict(latent_dim=4), dict(stages=2),
                                    dict(codebook_size=32), dict(channels=(8, 8, 8))])
def test_only_growth_is_a_widening(change):
    with pytest.raises(VQError, match="cannot widen"):
        check_widening(TINY, dataclasses.replace(TINY, **change))


def test_train_widens_init_and_starts_where_it_was(image_dir, tiny_weights, tmp_path):
    tcfg = TrainConfig(steps=3, batch_size=4, crop=32, lr=1e-6, warmup=1, workers=0, ckpt_every=1000, val_every=1000)
    out = tmp_path / "wide.safetensors"
    res = train(image_dir, out, WIDE, tcfg, device="cpu", progress=False, init=tiny_weights, widen=True)
    assert res.history[0] == {"init": load_weights(tiny_weights).model_id, "widened": True}
    w = load_weights(out)
    assert w.config == WIDE and w.histogram.shape == (WIDE.stages, WIDE.codebook_size)
    with pytest.raises(VQError, match="needs weights"):
        train(image_dir, out, WIDE, tcfg, device="cpu", progress=False, widen=True)


def test_cli_widen_needs_init(image_dir, tmp_path):
    r = CliRunner().invoke(app, ["train", str(image_dir), "--widen", "--out", str(tmp_path / "w.safetensors")])
    assert r.exit_code == 2 and "--widen needs --init" in r.output
