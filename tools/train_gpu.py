"""A timed training burst on a lent GPU (`make train-gpu`), and its CPU dry run.

A GPU comes rarely and for minutes, so the burst trains for a fixed time rather than a fixed
number of steps: a short pilot of training steps on random crops measures the step time, the
step count follows from the budget, and a run that overstays its budget by 15 % (a slow data
loader) is cut at a checkpoint and finalised from it. The release is written in parts of at most
--part-mib MiB (what the machine sends back); `cat NAME.safetensors.part* > NAME.safetensors`
joins them, and the model id checks the join. The log's history goes to NAME.json.

    python tools/train_gpu.py --data .gpu/data --out "$OUT" --seconds 380 \
        --init weights/default.safetensors --widen --batch-size 64 --lr 3e-4       # on CUDA
    python tools/train_gpu.py --data tests/imgs --out /tmp/o --dry-run --preset tiny  # on CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vqcli.config import PRESETS, ModelConfig, TrainConfig  # noqa: E402
from vqcli.model import VQVAE  # noqa: E402
from vqcli.train import TrainingInterrupted, train, train_step, use_bf16  # noqa: E402


def step_seconds(cfg: ModelConfig, batch: int, crop: int, dev: torch.device, steps: int = 25, warm: int = 5) -> float:
    """Seconds per training step (vqcli.train.train_step: forward, backward, AdamW) of a fresh model
    on random crops."""
    model = VQVAE(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, crop, crop, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16("auto", dev))
    t0 = 0.0
    for i in range(steps):
        if i == warm:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        train_step(model, model, opt, x, cfg, autocast, 1e-4)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (steps - warm)


def split(path: Path, out: Path, part_mib: float) -> list[Path]:
    """path cut into out/NAME.partN files of at most part_mib MiB each."""
    data, size = path.read_bytes(), int(part_mib * 2**20)
    parts = []
    for i in range(0, len(data), size):
        parts.append(out / f"{path.name}.part{i // size}")
        parts[-1].write_bytes(data[i:i + size])
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".gpu/data"))
    ap.add_argument("--out", type=Path, required=True, help="folder for the parts and the log")
    ap.add_argument("--name", default="hifi")
    ap.add_argument("--preset", default="hifi", choices=sorted(PRESETS))
    ap.add_argument("--init", type=Path, help="release weights to continue from (their config wins)")
    ap.add_argument("--widen", action="store_true", help="with --init: grow its network to --preset's sizes")
    ap.add_argument("--seconds", type=float, default=380.0, help="training time budget")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="a fixed step count instead of the pilot's")
    ap.add_argument("--grace", type=float, default=30.0, help="seconds of set-up allowed beyond 1.15x the budget")
    ap.add_argument("--part-mib", type=float, default=15.0)
    ap.add_argument("--dry-run", action="store_true", help="a few small steps on the CPU")
    a = ap.parse_args()

    dev = torch.device("cuda" if torch.cuda.is_available() and not a.dry_run else "cpu")
    if dev.type == "cpu" and not a.dry_run:
        print("train_gpu: no CUDA device here; use --dry-run for the CPU check", file=sys.stderr)
        return 1
    batch, crop = (2, 32) if a.dry_run else (a.batch_size, a.crop)
    cfg = PRESETS[a.preset]
    if a.init is not None and not a.widen:
        from vqcli.weights import load_weights

        cfg = load_weights(a.init, "cpu").config
    per_step = step_seconds(cfg, batch, crop, dev, *((4, 1) if a.dry_run else (25, 5)))
    steps = a.steps or (3 if a.dry_run else max(10, int(a.seconds / per_step)))
    print(f"train_gpu: {dev}, preset {a.preset}, {per_step * 1e3:.1f} ms/step -> {steps} steps of {batch}x{crop}²",
          flush=True)
    tcfg = TrainConfig(steps=steps, batch_size=batch, crop=crop, lr=a.lr, warmup=min(a.warmup, max(1, steps // 10)),
                       val_every=10**9, ckpt_every=max(1, steps // 4), seed=a.seed,
                       workers=0 if a.dry_run else a.workers, cache=True)
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="train_gpu."))
    release = work / f"{a.name}.safetensors"
    deadline = time.time() + 1.15 * a.seconds + a.grace  # the data cache and k-means come first

    def on_step(step: int) -> None:
        if time.time() > deadline and step < steps:
            raise KeyboardInterrupt  # checkpointed between steps, then finalised below

    t0, cut = time.time(), None
    try:
        res = train(a.data, release, cfg, tcfg, device=dev.type, on_step=on_step, init=a.init, log_every=100,
                    widen=a.widen)
    except TrainingInterrupted as e:
        print(f"train_gpu: over time at step {e.step}; finalising from {e.path}", flush=True)
        cut = e.step
        res = train(a.data, release, cfg, dataclasses.replace(tcfg, steps=e.step), device=dev.type, resume=e.path)
    parts = split(release, a.out, a.part_mib)
    summary = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "preset": a.preset,
               "ms_per_step_pilot": round(per_step * 1e3, 2), "planned_steps": steps, "cut_at": cut,
               "wall_s": round(time.time() - t0, 1),
               "model_id": res.summary.get("model_id"), "parts": [p.name for p in parts], "history": res.history}
    (a.out / f"{a.name}.json").write_text(json.dumps(summary, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    print(f"train_gpu: model {summary['model_id']} in {len(parts)} part(s) under {a.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
