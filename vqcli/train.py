"""Training loop: AdamW with warm-up and cosine decay, EMA codebooks, checkpoints, DDP.

Run under `torchrun` for several GPUs or nodes: the process group is set up from the usual
environment variables, the model is wrapped in DistributedDataParallel, and the quantizer
synchronises its own statistics (see quantizer.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .config import ModelConfig, TrainConfig
from .data import CropDataset, StepSampler, usable_images
from .errors import VQError
from .fileio import atomic_output, check_output
from .images import load_image
from .indexcounts import collect_index_counts
from .metrics import entropy_bits, psnr_from_mse
from .model import VQVAE, pad_to_multiple, to_tensor
from .quantizer import RATE_BUFFERS
from .weights import FORMAT_VERSION, parse_config, read_safetensors, release_tensors, save_weights
from .widen import check_widening, widen_into

CKPT_FORMAT = "vqcli-checkpoint"


@dataclass
class TrainResult:
    model: VQVAE
    summary: dict[str, Any]  # as stored in the weights (rank 0 only; empty elsewhere)
    history: list[dict[str, Any]]


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training; a checkpoint was saved at `path` (unless `saved` is
    False: a second Ctrl-C inside a step, when the last checkpoint written stands)."""

    def __init__(self, path: Path, step: int, saved: bool = True) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved to {path}" if saved else
                         f"interrupted inside step {step + 1}; the last checkpoint ({path}) stands")
        self.path, self.step, self.saved = path, step, saved


@dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, Any] = field(default_factory=dict)  # the log window's running sums, so a resume logs the same figures


def checkpoint_path(out: Path) -> Path:
    """Where a run writing release weights `out` keeps its checkpoint: NAME.ckpt.safetensors beside it."""
    return out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors")


def check_train_outputs(out: Path, resume: Path | None, force: bool) -> None:
    """Refuse to replace release weights or an earlier run's checkpoint without `force`: weights
    decode every file made with them, and a checkpoint holds hours of work. A resumed run's own
    checkpoint is its to update."""
    check_output(out, force)
    ckpt = checkpoint_path(out)
    if resume is None and not force and ckpt.exists():
        raise VQError(f"{ckpt}: a checkpoint of an earlier run is there; continue it with --resume {ckpt}, "
                      "or use -f to start over")


def lr_at(step: int, tcfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 2% of the peak."""
    if step < tcfg.warmup:
        return tcfg.lr * (step + 1) / tcfg.warmup
    t = (step - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup)
    return tcfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# -- distributed ---------------------------------------------------------------------------
def dist_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# -- checkpoints ---------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    """This process's random generators (torch, CUDA, Python, numpy)."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "python": json.dumps(random.getstate(), default=list),
            "numpy": json.dumps(np.random.get_state()[1].tolist() + list(np.random.get_state()[2:]))}


def save_checkpoint(path: Path, model: VQVAE, opt: torch.optim.Optimizer, cfg: ModelConfig, tcfg: TrainConfig,
                    state: TrainState) -> None:
    """Everything needed to resume exactly: model with EMA state, optimizer, RNGs, step.

    Under DDP every rank calls it: each rank's RNG state is gathered to rank 0, which writes
    them as rank-suffixed entries (rng.torch.1, ...), so that each rank resumes its own streams."""
    from safetensors.torch import save

    rngs = [_rng_state()]
    if dist.is_initialized() and dist.get_world_size() > 1:
        rngs = [None] * dist.get_world_size()
        dist.all_gather_object(rngs, _rng_state())
        if dist.get_rank() != 0:
            return
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    meta = {
        "format": CKPT_FORMAT, "format_version": str(FORMAT_VERSION), "config": cfg.to_json(),
        "train_config": json.dumps(asdict(tcfg)), "optim_groups": json.dumps(osd["param_groups"]),
        "state": json.dumps(asdict(state)), "ranks": str(len(rngs)),
    }
    for r, rng in enumerate(rngs):
        sfx = f".{r}" if r else ""  # rank 0 keeps the unsuffixed names of single-process checkpoints
        tensors["rng.torch" + sfx] = rng["torch"]
        if rng["cuda"] is not None:
            tensors["rng.cuda" + sfx] = rng["cuda"]
        meta["rng.python" + sfx], meta["rng.numpy" + sfx] = rng["python"], rng["numpy"]
    with atomic_output(path) as f:
        f.write(save(tensors, metadata=meta))


def load_checkpoint(path: Path) -> tuple[ModelConfig, TrainConfig, dict[str, torch.Tensor], dict[str, str]]:
    tensors, meta = read_safetensors(path, "a vq checkpoint")
    cfg = parse_config(path, meta, CKPT_FORMAT)
    saved = json.loads(meta["train_config"])
    saved.pop("extra", None)  # a field (always empty) of checkpoints written before it was removed
    tcfg = TrainConfig(**saved)
    return cfg, tcfg, tensors, meta


def restore(model: VQVAE, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> TrainState:
    from .weights import load_state

    model_t = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state(Path("checkpoint"), model, model_t, strict_training=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["optim_groups"])})
    # This rank's own generators (rank-suffixed); a checkpoint of fewer ranks gives new ranks
    # rank 0's state advanced by nothing: they then differ only by their data streams.
    rank = dist.get_rank() if dist.is_initialized() else 0
    sfx = f".{rank}" if rank and f"rng.python.{rank}" in meta else ""
    torch.set_rng_state(tensors["rng.torch" + sfx])
    if "rng.cuda" + sfx in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda" + sfx])
    py = json.loads(meta["rng.python" + sfx])
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = json.loads(meta["rng.numpy" + sfx])
    np.random.set_state(("MT19937", np.array(npst[:624], dtype=np.uint32), *npst[624:]))
    return TrainState(**json.loads(meta["state"]))


# -- validation ----------------------------------------------------------------------------
@torch.no_grad()
def validate(model: VQVAE, files: list[Path], device: torch.device, crop: int = 256) -> dict[str, Any]:
    """PSNR for every prefix of stages and per-stage codebook usage over centre crops."""
    model.eval()
    S, K = model.cfg.stages, model.cfg.codebook_size
    mse = np.zeros(S)
    used = torch.zeros(S, K, dtype=torch.bool)
    for p in files:
        rgb = load_image(p).rgb
        h, w = rgb.shape[:2]
        y, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        x = to_tensor(rgb[y:y + crop, x0:x0 + crop]).to(device)
        xp, _ = pad_to_multiple(x, model.factor)
        idx = model.encode(xp)
        for s in range(S):
            used[s, idx[:, s].flatten().cpu()] = True
            rec = model.decode(idx[:, : s + 1])[..., : x.shape[2], : x.shape[3]]
            rec = (rec * 255).round() / 255  # as it would be stored
            mse[s] += F.mse_loss(rec, x).item()
    model.train()
    mse /= max(1, len(files))
    return {"psnr": [round(psnr_from_mse(m, 1.0), 3) for m in mse],
            "usage": [round(u, 4) for u in used.float().mean(1).tolist()]}


@torch.no_grad()
def mean_code_bits(model: VQVAE) -> float:
    """Entropy of the stages' recent code usage (EMA counts), in bits per index, averaged over
    stages: the rate a rate weight trains down (the codec's context models code below it)."""
    bits = [entropy_bits(layer.ema_count.double().cpu().numpy()) for layer in model.quantizer.layers]
    return sum(bits) / len(bits)


def use_bf16(precision: str, dev: torch.device) -> bool:
    """Whether the conv network trains under bf16 autocast ("auto": on CUDA, and on CPUs with native
    bf16 instructions, where tools/bench_train.py measured ~2x the fp32 step rate)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise VQError(f"precision {precision!r}: expected auto, bf16 or fp32")
    if precision == "auto":
        return dev.type == "cuda" or bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return precision == "bf16"


@torch.no_grad()
def warm_start(model: VQVAE, weights, vectors_per_step: int, widen: bool = False) -> None:
    """Copy release weights into a training model (widen: into a wider model, vqcli.widen). Release
    files drop the EMA codebook state, so it is rebuilt from the stored index histogram, as if each
    code had been assigned at its measured rate for a while: otherwise every code would look dead
    and be restarted at the first step."""
    if widen:
        widen_into(model, weights.model)
    else:
        # A change of rate weight adds or drops the rate-price buffers; every other tensor must match.
        missing, unexpected = model.load_state_dict(weights.model.state_dict(), strict=False)
        wrong = [k for k in missing + unexpected if not k.endswith(RATE_BUFFERS)]
        if wrong:
            raise VQError(f"{weights.path}: weights do not match the model: {wrong[0]}")
    for layer, hist in zip(model.quantizer.layers, weights.histogram.double()):
        count = (hist / hist.sum().clamp(min=1) * vectors_per_step).float()
        layer.ema_count.copy_(count)
        layer.ema_sum.copy_(layer.codebook * count[:, None])
        layer.initialised.fill_(True)


class StopFlag:
    """SIGTERM (a scheduler's preemption, `kill`) and Ctrl-C set a flag that the loop reads
    between steps (checkpoint, then stop), so that no signal lands inside a step, between
    opt.step() and the step counter. A second Ctrl-C stops at once (KeyboardInterrupt): the
    last checkpoint stands."""

    def __init__(self) -> None:
        self.set = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, h in self._previous.items():
            signal.signal(sig, h)

    def everywhere(self, world: int, device: torch.device) -> bool:
        """Whether any rank was asked to stop (a collective under DDP: every rank stops at the same step)."""
        if world == 1:
            return self.set
        t = torch.tensor([float(self.set)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


# -- the loop ------------------------------------------------------------------------------
def _reporter(total: int, start: int, enabled: bool):
    """A rich live progress display on a terminal, periodic log lines otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not enabled:
        return None, console
    prog = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                    disable=not console.is_terminal)
    prog.add_task("train", total=total, completed=start, info="")
    return prog, console


def train_step(net: torch.nn.Module, model: VQVAE, opt: torch.optim.Optimizer, x: torch.Tensor, cfg: ModelConfig,
               autocast, lr: float, msssim_weight: float = 0.0, ms_ssim=None):
    """One optimisation step on crops x [B, 3, H, W] in [0, 1] (net: the model or its DDP wrapper)
    -> (the forward's output, the float reconstruction, the loss)."""
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast:
        res = net(x)
    recon = res.recon.float()
    loss = F.mse_loss(recon, x) + cfg.beta * res.commit_loss
    if ms_ssim is not None:
        loss = loss + msssim_weight * (1 - ms_ssim(recon.clamp(0, 1), x, data_range=1.0))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return res, recon, loss


class Window:
    """What a log line reports over the steps since the last one: loss, the PSNR of full-rate
    reconstructions (quantizer dropout would blur it), the codes used, crops per second. Its state
    travels in checkpoints, so that a resumed run logs as an uninterrupted one."""

    def __init__(self, cfg: ModelConfig, dev: torch.device, saved: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.used = torch.zeros(cfg.stages, cfg.codebook_size, dtype=torch.bool, device=dev)  # no copy per step
        self.acc: dict[str, Any] = {"loss": 0.0, "mse": 0.0, "n": 0, "steps": 0}
        if saved:
            saved = dict(saved)
            self.used = torch.tensor(saved.pop("used"), dtype=torch.bool, device=dev)
            self.acc = saved
        self.t_last, self.crops = time.time(), 0

    def add(self, res, recon: torch.Tensor, x: torch.Tensor, loss: torch.Tensor, world: int) -> None:
        S, f = self.cfg.stages, self.cfg.downsample
        self.used.scatter_(1, res.indices.permute(1, 0, 2, 3).reshape(S, -1), True)
        if (res.n_stages.flatten() == S).any():
            err = (recon - x).pow(2).mean(1).flatten()  # per pixel
            per_pos = res.n_stages.repeat_interleave(f, 1).repeat_interleave(f, 2).flatten()
            self.acc["mse"] += err[per_pos == S].mean().item()
            self.acc["n"] += 1
        self.acc["loss"] += loss.item()
        self.acc["steps"] += 1
        self.crops += x.shape[0] * world

    def report(self, step: int, tcfg: TrainConfig, model: VQVAE) -> tuple[dict[str, Any], float]:
        """(the log entry, seconds per step) of the window; then a new window starts."""
        dt = time.time() - self.t_last
        a = self.acc
        info = {"step": step, "loss": round(a["loss"] / a["steps"], 5),
                "psnr": round(psnr_from_mse(a["mse"] / max(1, a["n"]), 1.0), 2),
                "usage": [round(u, 3) for u in self.used.float().mean(1).tolist()],
                "bits": round(mean_code_bits(model), 3),
                "crops_per_s": round(self.crops / max(dt, 1e-9), 2), "lr": lr_at(step, tcfg)}
        per_step = dt / a["steps"]
        self.used.zero_()
        self.acc = {"loss": 0.0, "mse": 0.0, "n": 0, "steps": 0}
        self.t_last, self.crops = time.time(), 0
        return info, per_step

    def saved(self) -> dict[str, Any]:
        return {**self.acc, "used": self.used.tolist()}


def training_device(device: str) -> torch.device:
    """The device to train on, with an index for CUDA (set_device needs one), made current."""
    from .weights import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def _starting_point(cfg: ModelConfig, tcfg: TrainConfig, resume: Path | None, init: Path | None, widen: bool,
                    rate_weight: float | None):
    """(config, train config, the checkpoint's (tensors, meta) or None, the init weights or None)
    of a run: a fresh one, a resumed one (its checkpoint's configs) or a fine-tune (init's config,
    or cfg's sizes when widening)."""
    from .weights import load_weights

    resumed = None
    if resume is not None:
        cfg, old_t, r_tensors, r_meta = load_checkpoint(resume)
        tcfg = TrainConfig(**{**asdict(old_t), "steps": tcfg.steps or old_t.steps})
        resumed = (r_tensors, r_meta)
    if widen and init is None:
        raise VQError("widening needs weights to start from (init)")
    start = load_weights(init, "cpu") if init is not None else None
    if start is not None and widen:
        check_widening(start.config, cfg)
    elif start is not None:
        cfg = start.config
    if rate_weight is not None and resumed is None:
        cfg = dataclasses.replace(cfg, rate_weight=rate_weight)
    return cfg, tcfg, resumed, start


def _loader(files: list[Path], tcfg: TrainConfig, rank: int, first_step: int, dev: torch.device) -> DataLoader:
    ds = CropDataset(files, tcfg.crop, tcfg.seed, rank, cache=tcfg.cache)
    return DataLoader(ds, batch_sampler=StepSampler(tcfg.batch_size, first_step, tcfg.steps),
                      num_workers=tcfg.workers, pin_memory=dev.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if tcfg.workers else None,
                      # Its own generator: creating the iterator must not draw from the global RNG,
                      # or a resumed run would drift from an uninterrupted one.
                      generator=torch.Generator().manual_seed(tcfg.seed))


def _ms_ssim(tcfg: TrainConfig):
    """pytorch_msssim's ms_ssim when the loss has an MS-SSIM term, else None."""
    if tcfg.msssim_weight <= 0:
        return None
    from pytorch_msssim import ms_ssim

    if tcfg.crop < 176:
        raise VQError(f"msssim_weight needs crop >= 176 (MS-SSIM's 5 scales), got {tcfg.crop}",
                      params=("msssim_weight", "crop"))
    return ms_ssim


@dataclass
class Run:
    """A training run's parts, as the loop uses them."""

    model: VQVAE
    net: torch.nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    state: TrainState
    cfg: ModelConfig
    tcfg: TrainConfig
    dev: torch.device
    rank: int
    world: int
    ckpt: Path

    def checkpoint(self) -> None:
        save_checkpoint(self.ckpt, self.model, self.opt, self.cfg, self.tcfg, self.state)


def _build(cfg: ModelConfig, tcfg: TrainConfig, dev: torch.device, rank: int, world: int, ckpt: Path, resumed,
           start, widen: bool) -> Run:
    """The model, optimizer and state of a run: seeded, then restored from a checkpoint or warm-started."""
    torch.manual_seed(tcfg.seed + rank)
    random.seed(tcfg.seed + rank)
    np.random.seed(tcfg.seed + rank)
    model = VQVAE(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=(0.9, 0.99))
    state = TrainState()
    if resumed:
        state = restore(model, opt, *resumed)
    elif start is not None:
        warm_start(model, start, tcfg.batch_size * world * (tcfg.crop // cfg.downsample) ** 2, widen)
        state.history.append({"init": start.model_id, **({"widened": True} if widen else {})})
    net: torch.nn.Module = model
    if world > 1:
        # The quantizer keeps its buffers in sync itself; DDP must not overwrite them from rank 0.
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)
    return Run(model, net, opt, state, cfg, tcfg, dev, rank, world, ckpt)


def train(data_dir: Path, out: Path, cfg: ModelConfig, tcfg: TrainConfig, *, val_dir: Path | None = None,
          resume: Path | None = None, device: str = "auto", half: bool = True,
          progress: bool = True, log_every: int = 50, val_images: int = 8,
          on_step: Callable[[int], None] | None = None, init: Path | None = None,
          rate_weight: float | None = None, widen: bool = False) -> TrainResult:
    """Train (or resume) and write release weights to `out` (rank 0).

    init: release weights to start from (fine-tuning: their config replaces `cfg`, the optimizer
    starts fresh with tcfg's warm-up); not with resume, which restores a whole training state.
    rate_weight: replaces the model config's (fresh or from init) entropy-constrained assignment
    weight; a resumed run keeps its checkpoint's.
    widen: with init, grow init's network to `cfg`'s sizes, computing the same images at the start.
    """
    if init is not None and resume is not None:
        raise VQError("start from weights or resume a checkpoint, not both")
    dev = training_device(device)
    rank, world = dist_setup(dev)
    cfg, tcfg, resumed, start = _starting_point(cfg, tcfg, resume, init, widen, rate_weight)
    files = usable_images(data_dir)
    val_files = usable_images(val_dir)[:val_images] if val_dir else []
    run = _build(cfg, tcfg, dev, rank, world, checkpoint_path(out), resumed, start, widen)
    loader = _loader(files, run.tcfg, rank, run.state.step, dev)
    ms_ssim = _ms_ssim(run.tcfg)
    prog, console = _reporter(tcfg.steps, run.state.step, progress and rank == 0)
    if rank == 0:
        console.print(f"training {sum(p.numel() for p in run.model.parameters()):,} parameters on {dev} "
                      f"x{world}, {len(files)} images, steps {run.state.step}->{tcfg.steps}, batch "
                      f"{tcfg.batch_size}x{tcfg.crop}²")
    _loop(run, loader, ms_ssim, val_files, log_every, on_step, prog, console, progress and rank == 0)
    summary: dict[str, Any] = {}
    run.checkpoint()
    if rank == 0:
        summary = finalize(run.model, cfg, tcfg, run.state, files, out, dev, half, console)
    if world > 1:
        dist.barrier()
    return TrainResult(run.model, summary, run.state.history)


def _loop(run: Run, loader: DataLoader, ms_ssim, val_files: list[Path], log_every: int,
          on_step: Callable[[int], None] | None, prog, console, show: bool) -> None:
    """The optimisation steps up to tcfg.steps: logs, validation, checkpoints; on an interrupt
    (Ctrl-C, SIGTERM on any rank) a checkpoint between two steps, then TrainingInterrupted."""
    model, state, tcfg = run.model, run.state, run.tcfg
    window = Window(run.cfg, run.dev, state.window)
    autocast = torch.autocast(run.dev.type, dtype=torch.bfloat16, enabled=use_bf16(tcfg.precision, run.dev))
    model.train()
    step = state.step
    t_start = time.time() - state.seconds
    if prog:
        prog.start()
    stop = StopFlag().install()
    between_steps = True  # the state (model, optimizer, RNGs, step) is consistent: a checkpoint may be taken
    try:
        for batch in loader:
            between_steps = False
            x = batch.to(run.dev, non_blocking=True).float() / 255.0
            res, recon, loss = train_step(run.net, model, run.opt, x, run.cfg, autocast, lr_at(step, tcfg),
                                          tcfg.msssim_weight, ms_ssim)
            step += 1
            window.add(res, recon, x, loss, run.world)
            if step % log_every == 0 or step == tcfg.steps:
                info, per_step = window.report(step, tcfg, model)
                state.history.append(info)
                if run.rank == 0:
                    _log(info, (tcfg.steps - step) * per_step, tcfg.steps, prog, console, show)
            elif prog:
                prog.update(prog.task_ids[0], completed=step)
            state.step, state.seconds = step, time.time() - t_start
            between_steps = True
            if run.rank == 0 and val_files and (step % tcfg.val_every == 0 or step == tcfg.steps):
                v = validate(model, val_files, run.dev)
                state.history.append({"step": step, "val": v})
                console.print(f"val @ {step}: psnr by stages {v['psnr']}  usage {v['usage']}", highlight=False)
            if step % tcfg.ckpt_every == 0:
                state.window = window.saved()
                run.checkpoint()
            if on_step:
                on_step(step)
            if stop.everywhere(run.world, run.dev) and step < tcfg.steps:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if prog:
            prog.stop()
        if not between_steps:  # a second Ctrl-C inside a step: its state is half-updated, keep the last checkpoint
            raise TrainingInterrupted(run.ckpt, step, saved=False) from None
        state.seconds, state.window = time.time() - t_start, window.saved()
        run.checkpoint()
        raise TrainingInterrupted(run.ckpt, step) from None
    finally:
        stop.restore()
    if prog:
        prog.stop()


def _log(info: dict[str, Any], eta_s: float, steps: int, prog, console, show: bool) -> None:
    usage = " ".join(f"{100 * u:.0f}" for u in info["usage"])
    line = (f"loss {info['loss']:.4f} psnr {info['psnr']:.2f} bits/index {info['bits']:.2f} usage% {usage} "
            f"{info['crops_per_s']:.1f} crops/s")
    if prog and console.is_terminal:
        prog.update(prog.task_ids[0], completed=info["step"], info=line)
    elif show:
        console.print(f"step {info['step']}/{steps} {line} eta {eta_s / 60:.1f} min", highlight=False)


def finalize(model: VQVAE, cfg: ModelConfig, tcfg: TrainConfig, state: TrainState, files: list[Path], out: Path,
             dev: torch.device, half: bool, console) -> dict[str, Any]:
    """Write release weights: the inference tensors plus index histograms over the training images."""
    from rich.progress import Progress

    release = VQVAE(cfg).to(dev)
    rt = release_tensors(model, {}, half)
    release.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in rt.items()}, strict=False)
    release.eval()
    with Progress(console=console, disable=not console.is_terminal, transient=True) as p:
        task = p.add_task("index histograms", total=len(files))
        stats = collect_index_counts(release, files, dev, on_image=lambda _: p.advance(task))
    hist = stats["histogram"]
    summary = {
        "steps": state.step, "seconds": round(state.seconds, 1), "images": len(files),
        "train_config": asdict(tcfg), "torch": torch.__version__, "command": " ".join(sys.argv[-20:]),
        "last": state.history[-1] if state.history else {},
        "val": next((h["val"] for h in reversed(state.history) if "val" in h), None),
        "used_codes_train": (hist > 0).sum(1).tolist(),
        "init": next((h["init"] for h in state.history if "init" in h), None),
    }
    mid = save_weights(out, release, cfg, stats, summary, half=half)
    console.print(f"wrote {out} (model id {mid}); codes used on train per stage: {summary['used_codes_train']}")
    return {**summary, "model_id": mid}
