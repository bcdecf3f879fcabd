"""Train an enhancement layer (vqcli/enhance.py) over a frozen base model, then write its weights.

    nice -n 15 .venv/bin/python tools/train_enhance.py --cache runs/proxy_crops.pt \
        --init runs/proxy_0.1b.pt --minutes 60 --out runs/enh.safetensors

The crops and the base's reconstruction of them (all stages) come from the cache that
tools/proxy_enhance.py builds (--cache there). Every training sample draws one of the levels;
level l has its own per-channel steps and loss bpp + lam / step_l^2 * 255^2 * MSE (uniform
noise for rounding; the rate is a Gaussian per channel and context bucket, the context taken from
the rounded earlier channels as the coder takes it). At the end the symbol counts of every
level, channel and context over the training crops become the coder's integer tables.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from vqcli.enhance import BUCKETS, EnhanceConfig, Enhancement, contexts
from vqcli.enhancecoding import count_symbols, save_enhancement
from vqcli.weights import load_weights

STEPS = (0.7, 1.0, 1.4, 2.0, 2.8, 4.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 1) * 255).round() - (b * 255).round()).pow(2).mean((1, 2, 3))
    return float((10 * torch.log10(255 ** 2 / mse.clamp(min=1e-10))).mean())


def init_from_proxy(net: Enhancement, path: Path) -> None:
    """Start from tools/proxy_enhance.py's saved network: its prior's mean half becomes the mean."""
    sd = torch.load(path)["net"]
    c = net.cfg.channels
    mine = {k: v for k, v in sd.items() if not k.startswith("prior.")}
    mine["mean.1.weight"], mine["mean.1.bias"] = sd["prior.1.weight"][:c], sd["prior.1.bias"][:c]
    mine["log_step"] = net.log_step.detach().clone()
    net.load_state_dict(mine)


def rate_bits(q: torch.Tensor, ctx: torch.Tensor, log_scale: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Bits per image of noisy latents q [B, C, h, w] under zero-mean Gaussians of log scale
    log_scale[level, c, ctx]."""
    c = torch.arange(q.shape[1]).view(1, -1, 1, 1)
    s = log_scale[level.view(-1, 1, 1, 1), c, ctx].exp().clamp(min=0.05)
    n = torch.distributions.Normal(0.0, s)
    p = (n.cdf(q + 0.5) - n.cdf(q - 0.5)).clamp(min=1e-9)
    return -(p.log() / math.log(2)).sum((1, 2, 3))


@torch.no_grad()
def evaluate(net: Enhancement, x: torch.Tensor, b: torch.Tensor, log_scale: torch.Tensor) -> list[dict]:
    feats = net.features(b)
    rows = []
    for lv in range(net.cfg.levels):
        q = net.analyse(x, b, feats, net.steps(float(lv))).round().clamp(-net.cfg.radius, net.cfg.radius)
        lvl = torch.full((x.shape[0],), lv)
        bits = rate_bits(q, contexts(q.long()), log_scale, lvl)
        rows.append({"level": lv, "psnr": round(psnr(net.synthesise(q, b, feats, net.steps(float(lv))), x), 3),
                     "bpp": round(float(bits.mean() / (x.shape[2] * x.shape[3])), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=Path("weights/default.safetensors"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--init", type=Path, help="a network saved by tools/proxy_enhance.py --save")
    ap.add_argument("--resume", type=Path, help="a checkpoint of this script (--ckpt)")
    ap.add_argument("--ckpt", type=Path, default=Path("runs/enh.ckpt"))
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--lam", type=float, default=0.1, help="lambda at step 1")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--count-crops", type=int, default=1200, help="training crops counted for the tables")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = EnhanceConfig(levels=len(STEPS))
    net = Enhancement(cfg)
    with torch.no_grad():
        net.log_step.copy_(torch.tensor(STEPS).log()[:, None].expand(-1, cfg.channels))
    log_scale = torch.nn.Parameter(torch.zeros(cfg.levels, cfg.channels, BUCKETS))
    if args.init is not None:
        init_from_proxy(net, args.init)
        with torch.no_grad():
            net.log_step.copy_(torch.tensor(STEPS).log()[:, None].expand(-1, cfg.channels))
    opt = torch.optim.AdamW(list(net.parameters()) + [log_scale], lr=args.lr, weight_decay=0)
    step, log = 0, []
    if args.resume is not None:
        saved = torch.load(args.resume)
        net.load_state_dict(saved["net"])
        log_scale.data.copy_(saved["log_scale"])
        opt.load_state_dict(saved["opt"])
        step, log = saved["step"], saved["log"]
    data = torch.load(args.cache)
    tx, tb, vx, vb = data["train_x"], data["train_b"], data["val_x"], data["val_b"]
    lam = torch.tensor([args.lam / s ** 2 for s in STEPS])
    t0, last_ckpt = time.time(), time.time()

    def checkpoint() -> None:
        torch.save({"net": net.state_dict(), "log_scale": log_scale.detach(), "opt": opt.state_dict(),
                    "step": step, "log": log}, args.ckpt)

    while time.time() - t0 < 60 * args.minutes:
        i = torch.randint(0, tx.shape[0], (args.batch,))
        x, b = tx[i], tb[i]
        level = torch.randint(0, cfg.levels, (args.batch,))
        feats = net.features(b)
        y = net.analyse(x, b, feats, net.steps(level))
        with torch.no_grad():
            ctx = contexts(y.round().clamp(-cfg.radius, cfg.radius).long())
        q = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        recon = net.synthesise(q, b, feats, net.steps(level))
        mse = (recon - x).pow(2).mean((1, 2, 3))
        bpp = rate_bits(q, ctx, log_scale, level) / (x.shape[2] * x.shape[3])
        loss = (bpp + lam[level] * 255 ** 2 * mse).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 500 == 0:
            log.append({"step": step, "minutes": round((time.time() - t0) / 60, 1),
                        "val": evaluate(net, vx, vb, log_scale)})
            print(json.dumps(log[-1]), flush=True)
        if time.time() - last_ckpt > 600:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    base = load_weights(args.base, "cpu")
    counts = count_symbols(net, tx[:args.count_crops], tb[:args.count_crops])
    save_enhancement(args.out, net, counts, base.model_id,
                     {"steps": step, "lam": args.lam, "trained_on": "train/ + permissive/ crops (runs/data_all)",
                      "val_crops": evaluate(net, vx, vb, log_scale)})
    print(json.dumps({"steps": step, "out": str(args.out)}), flush=True)


if __name__ == "__main__":
    main()
