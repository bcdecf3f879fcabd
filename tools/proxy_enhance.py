"""Proxy of an enhancement layer (issue 22, lever a) in fixed CPU time: how many bits a small
learned residual coder, conditioned on a frozen base model's reconstruction, needs to lift the
top of the curve.

    nice -n 15 .venv/bin/python tools/proxy_enhance.py --base weights/default.safetensors \
        --data runs/data_all --val ../shared/data/val --minutes 35 --lam 0.02 --out runs/proxy.json \
        --cache runs/proxy_crops.pt

The base codes every crop with all its stages (its top point, greedy codes). The enhancement is
a latent of --channels numbers per --factor x --factor pixels (4 or 8): an analysis transform of (x - base, base), a
synthesis transform of (the quantized latent, base) that adds a residual to the base, and a
Gaussian prior whose mean and scale are predicted from the base's reconstruction alone (which the
decoder has: no side information). Training: additive uniform noise for quantization, loss
bpp + lam * 255^2 * MSE (the CompressAI convention), AdamW, fixed crops cached in memory.
Evaluated on 8 val crops of 256 x 256 with rounding (ideal bits of the discretized Gaussian, not
a coded stream): PSNR and bpp of the base alone and of base + enhancement.

A proxy, not a codec: nothing here is part of vqcli's format. It measures whether the design is
worth its training on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqcli.images import find_images, load_image
from vqcli.model import to_tensor
from vqcli.weights import load_weights

LOG2 = math.log(2)
RESIDUAL_GAIN = 32.0
LATENT_GAIN = 16.0  # a fresh analysis transform's output is ~0.02: well below the quantization step


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2 if stride == 1 else (k - stride) // 2 + (k % 2))


class Enhancement(nn.Module):
    def __init__(self, channels: int = 32, width: int = 64, factor: int = 4) -> None:
        super().__init__()
        if factor not in (4, 8):
            raise ValueError("factor 4 or 8")
        a_in, c_in = (6, 3) if factor == 4 else (width, width)
        extra_a = [] if factor == 4 else [conv(6, width, 4, 2), nn.SiLU()]
        extra_c = [] if factor == 4 else [conv(3, width, 4, 2), nn.SiLU()]
        extra_s = [] if factor == 4 else [conv(width, 4 * width), nn.PixelShuffle(2), nn.SiLU()]
        self.analysis = nn.Sequential(*extra_a, conv(a_in, width, 4, 2), nn.SiLU(), conv(width, width), nn.SiLU(),
                                      conv(width, width, 4, 2), nn.SiLU(), conv(width, channels))
        self.context = nn.Sequential(*extra_c, conv(c_in, width, 4, 2), nn.SiLU(), conv(width, width, 4, 2),
                                     nn.SiLU(), conv(width, width))  # the base's features, known to the decoder
        self.prior = nn.Sequential(nn.SiLU(), conv(width, 2 * channels))
        self.synthesis = nn.Sequential(conv(channels + width, width), nn.SiLU(), *extra_s, conv(width, 4 * width),
                                       nn.PixelShuffle(2), nn.SiLU(), conv(width, 4 * 16), nn.PixelShuffle(2),
                                       nn.SiLU(), conv(16, 3))

    def forward(self, x: torch.Tensor, base: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, bits per image) of x [B, 3, H, W] in [0, 1] given base."""
        # The residual is small (about 0.03 RMS at 29 dB): scaled up so that the latent starts well
        # above the quantization step and carries information from the first steps.
        y = self.analysis(torch.cat([(x - base) * RESIDUAL_GAIN, base * 2 - 1], 1)) * LATENT_GAIN
        ctx = self.context(base * 2 - 1)
        mu, log_scale = self.prior(ctx).chunk(2, 1)
        scale = log_scale.clamp(-6, 6).exp().clamp(min=0.11)
        if train:
            yq = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            yq = torch.round(y - mu) + mu
        normal = torch.distributions.Normal(mu, scale)
        p = (normal.cdf(yq + 0.5) - normal.cdf(yq - 0.5)).clamp(min=1e-9)
        bits = -(p.log() / LOG2).sum((1, 2, 3))
        recon = base + self.synthesis(torch.cat([yq, ctx], 1)) * 0.1
        return recon, bits


def crops_of(files: list[Path], n: int, size: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        rgb = load_image(files[rng.integers(len(files))]).rgb
        h, w = rgb.shape[:2]
        if h < size or w < size:
            continue
        y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
        out.append(to_tensor(rgb[y:y + size, x:x + size])[0])
    return torch.stack(out)


@torch.no_grad()
def base_of(weights, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    model = weights.model
    out = []
    for i in range(0, x.shape[0], batch):
        idx = model.encode(x[i:i + batch])
        out.append(model.decode(idx))
    return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 1) * 255).round() - (b * 255).round()).pow(2).mean((1, 2, 3))
    return float((10 * torch.log10(255 ** 2 / mse.clamp(min=1e-10))).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=Path("weights/default.safetensors"))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=35)
    ap.add_argument("--lam", type=float, default=0.02)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--factor", type=int, default=4, help="the enhancement latent's downsampling: 4 or 8")
    ap.add_argument("--crops", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="crops and base reconstructions, kept between runs")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the enhancement's training)")
    ap.add_argument("--init", type=Path, help="continue from an enhancement saved by --save (with its optimizer)")
    ap.add_argument("--save", type=Path, help="save the enhancement and its optimizer at the end")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    weights = load_weights(args.base, "cpu")
    t0 = time.time()
    if args.cache is not None and args.cache.exists():
        train_x, train_b, val_x, val_b = torch.load(args.cache).values()
    else:
        train_x = crops_of(find_images(args.data), args.crops, 128, 0)
        train_b = base_of(weights, train_x)
        val_x = crops_of(find_images(args.val)[:8], 8, 256, 1)
        val_b = base_of(weights, val_x)
        if args.cache is not None:
            torch.save({"train_x": train_x, "train_b": train_b, "val_x": val_x, "val_b": val_b}, args.cache)
    from vqcli.codec import compress
    from vqcli.images import LoadedImage
    from vqcli.model import to_uint8

    base_bpp = float(np.mean([8 * len(compress(weights, LoadedImage(to_uint8(v[None]), None, "RGB"),
                                               stages=weights.config.stages, effort=0).data) / (256 * 256)
                              for v in val_x]))
    print(f"crops and base in {time.time() - t0:.0f} s; base on val crops {psnr(val_b, val_x):.2f} dB", flush=True)
    net = Enhancement(args.channels, factor=args.factor).to(dev)
    train_x, train_b, val_x, val_b = (t.to(dev) for t in (train_x, train_b, val_x, val_b))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0)
    log, step, t1 = [], 0, time.time()
    if args.init is not None:
        saved = torch.load(args.init)
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        for g in opt.param_groups:  # the saved state carries the earlier run's rate
            g["lr"] = args.lr
        log, step = saved["log"], saved["step"]
    while time.time() - t1 < 60 * args.minutes:
        i = torch.randint(0, train_x.shape[0], (args.batch,), device=dev)
        x, b = train_x[i], train_b[i]
        recon, bits = net(x, b, train=True)
        mse = F.mse_loss(recon, x)
        bpp = bits.mean() / (x.shape[2] * x.shape[3])
        loss = bpp + args.lam * 255 ** 2 * mse
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 250 == 0:
            with torch.no_grad():
                r, vb = net(val_x, val_b, train=False)
            row = {"step": step, "minutes": (time.time() - t1) / 60, "val_psnr": psnr(r, val_x),
                   "val_enh_bpp": float(vb.mean() / (256 * 256)), "train_bpp": float(bpp.detach())}
            log.append(row)
            print(json.dumps(row), flush=True)
    with torch.no_grad():
        r, vb = net(val_x, val_b, train=False)
    result = {"base": str(args.base), "lam": args.lam, "channels": args.channels, "factor": args.factor, "steps": step,
              "minutes": args.minutes, "val_base_psnr": psnr(val_b, val_x), "base_bpp": base_bpp,
              "val_psnr": psnr(r, val_x), "val_enh_bpp": float(vb.mean() / (256 * 256)), "log": log}
    args.out.write_text(json.dumps(result, indent=1))
    if args.save is not None:
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "log": log, "step": step}, args.save)
    print(json.dumps({k: v for k, v in result.items() if k != "log"}), flush=True)


if __name__ == "__main__":
    main()
