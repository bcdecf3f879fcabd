"""Training: the loss drops, resume is exact, weights load back, DDP keeps codebooks identical."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from vqcli.config import PRESETS, ModelConfig, TrainConfig
from vqcli.errors import VQError
from vqcli.model import VQVAE
from vqcli.train import TrainingInterrupted, train
from vqcli.weights import load_weights, model_id_of, save_weights

TINY = PRESETS["tiny"]


def _tcfg(steps: int, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=8, crop=32, lr=3e-3, warmup=5, workers=0, ckpt_every=1000, val_every=1000)
    return TrainConfig(**{**base, **kw})


def test_tiny_training_loss_drops(image_dir: Path, tmp_path: Path) -> None:
    res = train(image_dir, tmp_path / "w.safetensors", TINY, _tcfg(80), device="cpu", progress=False, log_every=10)
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert losses[-1] < 0.75 * losses[0], losses
    w = load_weights(tmp_path / "w.safetensors")
    assert w.histogram.sum() > 0 and w.histogram.shape == (TINY.stages, TINY.codebook_size)
    assert w.training["steps"] == 80


def test_ctrl_c_saves_and_resume_continues_exactly(image_dir: Path, tmp_path: Path) -> None:
    full = train(image_dir, tmp_path / "a.safetensors", TINY, _tcfg(12), device="cpu", progress=False)

    def ctrl_c_at_6(step: int) -> None:
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as exc:
        train(image_dir, tmp_path / "b.safetensors", TINY, _tcfg(12), device="cpu", progress=False, on_step=ctrl_c_at_6)
    assert exc.value.step == 6 and not (tmp_path / "b.safetensors").exists()
    resumed = train(image_dir, tmp_path / "c.safetensors", TINY, _tcfg(12), device="cpu", progress=False,
                    resume=tmp_path / "b.ckpt.safetensors")
    assert resumed.summary["steps"] == 12
    a, c = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], c[k]), k


def test_weights_load_back_bit_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VQVAE(TINY)
    for layer in model.quantizer.layers:
        layer.codebook.normal_()
    hist = torch.randint(0, 50, (TINY.stages, TINY.codebook_size))
    mid = save_weights(tmp_path / "w.safetensors", model, TINY, {"histogram": hist}, {"note": "test"})
    w = load_weights(tmp_path / "w.safetensors")
    assert w.model_id == mid
    ref = model.state_dict()
    for k, v in w.model.state_dict().items():
        if k.rsplit(".", 1)[-1] not in ("ema_count", "ema_sum", "initialised"):
            assert torch.equal(v, ref[k]), k
    assert torch.equal(w.histogram, hist)
    # fp16 storage: the model id covers exactly what is stored.
    mid16 = save_weights(tmp_path / "h.safetensors", model, TINY, {"histogram": hist}, half=True)
    assert mid16 != mid and load_weights(tmp_path / "h.safetensors").model_id == mid16


def test_weights_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"hello, not weights")
    with pytest.raises(VQError, match="not vq weights"):
        load_weights(bad)
    # Weights of another shape than their config says.
    model = VQVAE(TINY)
    hist = torch.zeros(TINY.stages, TINY.codebook_size, dtype=torch.long)
    save_weights(tmp_path / "w.safetensors", model, ModelConfig(**{**TINY.__dict__, "latent_dim": 9}), {"histogram": hist})
    with pytest.raises(VQError, match="do not match"):
        load_weights(tmp_path / "w.safetensors")
    with pytest.raises(VQError, match="no such file"):
        load_weights(tmp_path / "missing.safetensors")


def test_model_id_depends_on_every_tensor() -> None:
    t = {"a": torch.zeros(3), "b": torch.ones(2)}
    mid = model_id_of(t)
    assert model_id_of({"b": torch.ones(2), "a": torch.zeros(3)}) == mid
    assert model_id_of({"a": torch.zeros(3), "b": torch.tensor([1.0, 2.0])}) != mid


def _ddp_worker(rank: int, world: int, port: int, image_dir: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    res = train(Path(image_dir), Path(out_dir) / "ddp.safetensors", TINY, _tcfg(8), device="cpu", progress=False)
    save_file({k: v.contiguous() for k, v in res.model.state_dict().items()}, str(Path(out_dir) / f"rank{rank}.st"))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_keep_identical_codebooks(image_dir: Path, tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(image_dir), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = load_file(str(tmp_path / "rank0.st")), load_file(str(tmp_path / "rank1.st"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert (tmp_path / "ddp.safetensors").exists()


def test_index_api_encode_decode_embed() -> None:
    torch.manual_seed(0)
    model = VQVAE(TINY).eval()
    for layer in model.quantizer.layers:
        layer.codebook.normal_()
    images = torch.rand(2, 3, 32, 48)
    idx = model.encode(images)
    assert idx.shape == (2, TINY.stages, 4, 6) and idx.dtype == torch.long
    # embed sums the code vectors of the first `stages` stages, position by position in raster order.
    emb = model.embed(idx, stages=2)
    assert emb.shape == (2, 4 * 6, TINY.latent_dim)
    q = model.quantizer.layers
    manual = q[0].lookup(idx[:, 0]) + q[1].lookup(idx[:, 1])  # [B, h, w, D]
    assert torch.allclose(emb, manual.reshape(2, -1, TINY.latent_dim))
    assert torch.allclose(model.embed(idx), model.latent_from_indices(idx).flatten(2).transpose(1, 2))
    assert model.decode(idx[:, :1]).shape == images.shape
    with pytest.raises(ValueError):
        model.latent_from_indices(idx[0])


def test_checkpoint_of_an_older_version_with_train_config_extra_loads(tmp_path: Path) -> None:
    """Checkpoints written before TrainConfig.extra was removed still resume."""
    import json

    from safetensors.torch import save

    from vqcli.train import TrainState, load_checkpoint, save_checkpoint
    from vqcli.weights import read_safetensors

    model = VQVAE(PRESETS["tiny"])
    path = tmp_path / "c.ckpt.safetensors"
    save_checkpoint(path, model, torch.optim.AdamW(model.parameters()), PRESETS["tiny"], TrainConfig(steps=7),
                    TrainState(step=3))
    tensors, meta = read_safetensors(path, "a vq checkpoint")
    meta["train_config"] = json.dumps({**json.loads(meta["train_config"]), "extra": {}})
    path.write_bytes(save(tensors, metadata=meta))
    assert load_checkpoint(path)[1].steps == 7
