"""Fine-tuning from release weights (--init), bf16 autocast choice, in-memory crop cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image

from vqcli.cli import app
from vqcli.config import PRESETS, TrainConfig
from vqcli.data import CropDataset
from vqcli.errors import VQError
from vqcli.images import find_images
from vqcli.model import VQVAE, to_tensor
from vqcli.train import train, use_bf16, warm_start
from vqcli.weights import load_weights


def _tcfg(steps: int, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=8, crop=32, lr=3e-3, warmup=2, workers=0, ckpt_every=1000, val_every=1000)
    return TrainConfig(**{**base, **kw})


def test_warm_start_keeps_codes_alive_and_encodes_identically(tiny_weights: Path) -> None:
    start = load_weights(tiny_weights)
    model = VQVAE(start.config)
    warm_start(model, start, vectors_per_step=512)
    x = to_tensor(make_image(32, 48, 5))
    assert torch.equal(model.encode(x), start.model.encode(x))
    for layer, hist in zip(model.quantizer.layers, start.histogram):
        assert abs(float(layer.ema_count.sum()) - 512) < 1e-2
        # Every code the training data used counts as alive: the first step restarts none of them.
        used = hist > 0
        alive = layer.ema_count >= layer.dead_threshold
        assert bool(alive[used].float().mean() > 0.5)
        assert torch.allclose(layer.ema_sum, layer.codebook * layer.ema_count[:, None])
    # A training step moves the used codes only a little; without the rebuilt EMA state (all counts
    # zero, as a release file has them) every code would count as dead and be restarted.
    cold = VQVAE(start.config)
    cold.load_state_dict(start.model.state_dict())
    moved = {}
    for name, m in (("warm", model), ("cold", cold)):
        m.train()
        before = [layer.codebook.clone() for layer in m.quantizer.layers]
        m(x)
        moved[name] = max(float((layer.codebook - b)[h > 0].norm() / b[h > 0].norm())
                          for layer, b, h in zip(m.quantizer.layers, before, start.histogram))
    assert moved["warm"] < 0.1 and moved["cold"] > 0.3, moved


def test_train_init_uses_the_weights_config_and_records_it(image_dir: Path, tiny_weights: Path, tmp_path: Path) -> None:
    start = load_weights(tiny_weights)
    # The preset passed is ignored: the config comes from the starting weights.
    res = train(image_dir, tmp_path / "ft.safetensors", PRESETS["cpu"], _tcfg(4, lr=1e-5), device="cpu",
                progress=False, init=tiny_weights)
    w = load_weights(tmp_path / "ft.safetensors")
    assert w.config == start.config and w.training["init"] == start.model_id
    assert res.summary["steps"] == 4 and w.model_id != start.model_id
    # With a tiny learning rate the network barely moves from where it started.
    a, b = start.model.state_dict(), w.model.state_dict()
    conv = "encoder.net.1.weight"
    assert (a[conv] - b[conv]).abs().max() < 1e-2
    with pytest.raises(VQError, match="not both"):
        train(image_dir, tmp_path / "x.safetensors", start.config, _tcfg(2), device="cpu", progress=False,
              init=tiny_weights, resume=tmp_path / "ft.ckpt.safetensors")


def test_cli_init_and_resume_conflict(tiny_weights: Path, image_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["train", str(image_dir), "--init", str(tiny_weights), "--resume", str(tiny_weights),
                                 "-o", str(tmp_path / "o.safetensors")])
    assert r.exit_code == 2 and "--init" in r.stderr and not (tmp_path / "o.safetensors").exists()
    r = CliRunner().invoke(app, ["train", str(image_dir), "--precision", "fp8", "-o", str(tmp_path / "o.safetensors")])
    assert r.exit_code == 2 and "--precision" in r.stderr


def test_precision_choice() -> None:
    cpu = torch.device("cpu")
    assert use_bf16("bf16", cpu) and not use_bf16("fp32", cpu)
    assert use_bf16("auto", torch.device("cuda"))
    with pytest.raises(VQError):
        use_bf16("fp16", cpu)


def test_crop_cache_gives_the_same_crops(image_dir: Path) -> None:
    files = find_images(image_dir)
    plain, cached = CropDataset(files, 32, seed=3), CropDataset(files, 32, seed=3, cache=True)
    for k in (0, 1, 17, 1000):
        assert np.array_equal(plain[k].numpy(), cached[k].numpy())
