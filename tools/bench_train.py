"""Training-step throughput of the model under several numeric set-ups, measured side by side.

    python tools/bench_train.py [--preset cpu] [--batch 16] [--crop 128] [--rounds 4] [--steps 3]

Configurations run interleaved (A B C A B C ...) so that load from other processes hits each
alike; prints crops/s per configuration and the ratio to fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vqcli.config import PRESETS
from vqcli.model import VQVAE


def make_step(preset: str, bf16: bool, channels_last: bool, compile_: bool, batch: int, crop: int):
    torch.manual_seed(0)
    model = VQVAE(PRESETS[preset])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compile_ else model
    x = torch.rand(batch, 3, crop, crop)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            res = net(x)
        loss = F.mse_loss(res.recon.float(), x) + 0.25 * res.commit_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step()  # warm-up (k-means init of the codebooks, compilation)
    step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    configs = {"fp32": (False, False, False), "bf16": (True, False, False), "bf16+channels_last": (True, True, False)}
    if a.compile:
        configs["bf16+channels_last+compile"] = (True, True, True)
    steps = {name: make_step(a.preset, *c, a.batch, a.crop) for name, c in configs.items()}
    times: dict[str, list[float]] = {n: [] for n in configs}
    for _ in range(a.rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            for _ in range(a.steps):
                step()
            times[name].append((time.perf_counter() - t) / a.steps)
    base = statistics.median(times["fp32"])
    print(f"preset {a.preset}, batch {a.batch}x{a.crop}^2, {a.threads} threads, median of {a.rounds} rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} {med:6.3f} s/step  {a.batch / med:6.1f} crops/s  x{base / med:.2f}")


if __name__ == "__main__":
    main()
