"""Crash safety of real `vq` processes: a training run killed with SIGKILL at a random moment
leaves a loadable checkpoint and `--resume` ends bit-identical to an uninterrupted run; SIGTERM
stops training between steps with a checkpoint; a batch `vq compress` killed mid-way leaves
only complete outputs (hidden `.NAME.*.tmp` files of the file being written may remain after
SIGKILL, which nothing can clean; vq's batch discovery ignores them; SIGTERM removes them)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_image
from PIL import Image

from vqcli.codec import decompress
from vqcli.train import load_checkpoint
from vqcli.weights import load_weights, read_safetensors

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "golden" / "tiny.safetensors"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TRAIN = ["--preset", "tiny", "--steps", "30", "--ckpt-every", "3", "--batch-size", "8", "--crop", "48",
         "--workers", "0", "--warmup", "3", "--lr", "3e-3", "--device", "cpu", "--no-half"]


def vq(*args: str) -> list[str]:
    return [sys.executable, "-m", "vqcli", *args]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t = time.time()
    while not path.exists():
        assert proc.poll() is None, f"process ended (rc {proc.returncode}) before {path} appeared"
        assert time.time() - t < timeout
        time.sleep(0.005)


def _same_run(a: Path, b: Path) -> None:
    """Two final checkpoints hold identical tensors (model, EMA, optimizer, RNGs) and losses."""
    ta, ma = read_safetensors(a)
    tb, mb = read_safetensors(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and ta[k].equal(tb[k]), k

    def losses(meta):
        return [(h["step"], h.get("loss"), h.get("psnr"), h.get("usage")) for h in json.loads(meta["state"])["history"]]

    assert losses(ma) == losses(mb) and losses(ma)


def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(image_dir: Path, tmp_path: Path) -> None:
    subprocess.run(vq("train", str(image_dir), "-o", str(tmp_path / "a.safetensors"), *TRAIN), env=ENV,
                   check=True, capture_output=True, timeout=300)
    ckpt = tmp_path / "b.ckpt.safetensors"
    proc = subprocess.Popen(vq("train", str(image_dir), "-o", str(tmp_path / "b.safetensors"), *TRAIN), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(ckpt, proc)
        time.sleep(random.Random().uniform(0, 0.2))  # any moment: inside a step or a checkpoint write
        killed_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert killed_running and proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "b.safetensors").exists()
    cfg, tcfg, tensors, meta = load_checkpoint(ckpt)  # the last complete checkpoint loads
    step = json.loads(meta["state"])["step"]
    assert 3 <= step < 30 and step % 3 == 0
    r = subprocess.run(vq("train", str(image_dir), "-o", str(tmp_path / "b.safetensors"), "--resume", str(ckpt),
                          "--device", "cpu", "--no-half"), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _same_run(tmp_path / "a.ckpt.safetensors", ckpt)
    wa, wb = read_safetensors(tmp_path / "a.safetensors")[0], read_safetensors(tmp_path / "b.safetensors")[0]
    assert all(wa[k].equal(wb[k]) for k in wa) and sorted(wa) == sorted(wb)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert all(p.startswith(".b.ckpt.safetensors.") for p in leftovers), leftovers  # at most the killed write


def test_sigterm_stops_training_between_steps_with_a_checkpoint(image_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.ckpt.safetensors"
    args = [a if a != "30" else "400" for a in TRAIN]
    proc = subprocess.Popen(vq("train", str(image_dir), "-o", str(tmp_path / "c.safetensors"), *args), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ckpt, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "checkpoint saved" in err
    step = int(err.split("interrupted at step ")[1].split(";")[0])
    meta = load_checkpoint(ckpt)[3]
    assert json.loads(meta["state"])["step"] == step  # the checkpoint is of the step the message names
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_batch_compress_killed_midway_leaves_only_complete_outputs(tmp_path: Path, sig) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for i in range(40):
        Image.fromarray(make_image(160, 200, i)).save(src / f"im{i:02d}.png")
    proc = subprocess.Popen(vq("compress", str(src), "-o", str(out), "--weights", str(TINY), "--device", "cpu",
                               "--jobs", "1"),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / "im02.vqz", proc)
        time.sleep(random.Random().uniform(0, 0.05))
        running = proc.poll() is None
        proc.send_signal(sig)
    finally:
        proc.wait(timeout=60)
    assert running and proc.returncode in (-sig, 130)
    w = load_weights(TINY)
    visible = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    assert 3 <= len(visible) < 40
    for p in visible:
        assert p.suffix == ".vqz"
        assert decompress(w, p.read_bytes(), name=p.name).rgb.shape == (160, 200, 3)
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    if sig == signal.SIGTERM:
        assert hidden == []
    else:
        assert len(hidden) <= 1 and all(h.endswith(".tmp") for h in hidden)
        r = subprocess.run(vq("decompress", str(out), "-o", str(tmp_path), "--weights", str(TINY)), env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr  # the batch ignores a leftover temp file


def _rng_worker(rank: int, world: int, port: int, out: str) -> None:
    import random as pyrandom

    import numpy as np
    import torch
    import torch.distributed as dist

    from vqcli.config import PRESETS, TrainConfig
    from vqcli.model import VQVAE
    from vqcli.train import TrainState, restore, save_checkpoint

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)
    pyrandom.seed(100 + rank)
    np.random.seed(100 + rank)
    model = VQVAE(PRESETS["tiny"])
    opt = torch.optim.AdamW(model.parameters())
    path = Path(out) / "ddp.ckpt.safetensors"
    before = (torch.get_rng_state(), pyrandom.getstate(), np.random.get_state()[1].copy())
    save_checkpoint(path, model, opt, PRESETS["tiny"], TrainConfig(), TrainState(step=7))
    dist.barrier()
    torch.rand(5), pyrandom.random(), np.random.random()  # move every generator on
    tensors, meta = read_safetensors(path)
    restore(model, opt, tensors, meta)
    after = (torch.get_rng_state(), pyrandom.getstate(), np.random.get_state()[1])
    ok = torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])
    Path(out, f"ok{rank}").write_text(str(ok))
    dist.destroy_process_group()


def test_ddp_checkpoint_keeps_each_ranks_own_rng_state(tmp_path: Path) -> None:
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rng_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "ok0").read_text() == "True" and (tmp_path / "ok1").read_text() == "True"
    tensors, meta = read_safetensors(tmp_path / "ddp.ckpt.safetensors")
    assert meta["ranks"] == "2" and not torch.equal(tensors["rng.torch"], tensors["rng.torch.1"])
    assert meta["rng.python"] != meta["rng.python.1"] and meta["rng.numpy"] != meta["rng.numpy.1"]
