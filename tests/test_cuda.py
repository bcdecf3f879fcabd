"""The CUDA paths: a file written on CUDA decodes to the same indices on the CPU, the CLI's
--device cuda, bf16 training steps on the GPU, tiling's out-of-memory fallback on a real CUDA
model. Skipped without CUDA; `make check-cuda` runs them with a report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image
from PIL import Image

from vqcli import tiling
from vqcli.codec import compress, decompress, encode_indices
from vqcli.images import LoadedImage
from vqcli.weights import load_weights

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
def test_stage_map_file_from_cuda_decodes_identically_on_cpu(tiny_weights):
    wc, wp = load_weights(tiny_weights, "cuda"), load_weights(tiny_weights, "cpu")
    rgb = make_image(88, 120, 21)
    res = compress(wc, LoadedImage(rgb, None, "RGB"), quality=60)
    a, b = decompress(wp, res.data), decompress(wc, res.data)
    assert np.array_equal(a.indices, b.indices)
    # The decoders run in float on different hardware: within one level of each other.
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max() <= 1


@needs_cuda
def test_cli_device_cuda_round_trip(tiny_weights, tmp_path):
    import subprocess

    src = tmp_path / "a.png"
    Image.fromarray(make_image(64, 80, 3)).save(src)
    run = [sys.executable, "-m", "vqcli"]
    r = subprocess.run(run + ["compress", str(src), "--weights", str(tiny_weights), "--device", "cuda"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for dev in ("cuda", "cpu"):
        out = tmp_path / f"back_{dev}.png"
        r = subprocess.run(run + ["decompress", str(tmp_path / "a.vqz"), "-o", str(out), "--weights", str(tiny_weights),
                                  "--device", dev], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    a, b = (np.asarray(Image.open(tmp_path / f"back_{d}.png")).astype(int) for d in ("cuda", "cpu"))
    assert np.abs(a - b).max() <= 1


@needs_cuda
def test_bf16_training_steps_on_cuda(image_dir, tmp_path):
    from vqcli.config import PRESETS, TrainConfig
    from vqcli.train import train, use_bf16

    assert use_bf16("auto", torch.device("cuda"))
    tcfg = TrainConfig(steps=6, batch_size=8, crop=32, lr=1e-3, warmup=2, workers=0, ckpt_every=3, val_every=1000)
    res = train(image_dir, tmp_path / "t.safetensors", PRESETS["tiny"], tcfg, device="cuda", progress=False, log_every=3)
    assert next(res.model.parameters()).is_cuda
    assert all(np.isfinite(h["loss"]) for h in res.history if "loss" in h)
    w = load_weights(tmp_path / "t.safetensors", "cpu")  # a CUDA-trained release loads on the CPU
    assert w.config == PRESETS["tiny"]


@needs_cuda
def test_tiling_oom_fallback_on_cuda(tiny_weights, monkeypatch):
    w = load_weights(tiny_weights, "cuda")
    rgb = make_image(512, 640, 5)  # a 64x80 latent grid
    expected = encode_indices(w, rgb, tile=32)
    real, seen = w.model.latent, []

    def flaky(x):  # a tile of more than 48x48 latent cells "does not fit" on the card
        seen.append(x.shape[-2] * x.shape[-1] // w.model.factor**2)
        if seen[-1] > 48 * 48:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real(x)

    monkeypatch.setattr(w.model, "latent", flaky)
    got = encode_indices(w, rgb, tile=64)  # fails at 64, goes on with tiles of 32
    assert seen[0] > 48 * 48 and max(seen[1:]) <= 48 * 48
    assert np.array_equal(got, expected)
    assert tiling.default_tile(torch.device("cuda")) == tiling.TILE_CUDA


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs two GPUs")
def test_nccl_ddp_two_ranks(image_dir, tmp_path):
    import subprocess

    out = tmp_path / "ddp.safetensors"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "vqcli", "train",
                        str(image_dir), "--preset", "tiny", "--steps", "4", "--batch-size", "4", "--crop", "32",
                        "--workers", "0", "--device", "cuda", "--out", str(out)],
                       capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_weights(out, "cpu").config.stages == 3
