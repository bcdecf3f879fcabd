"""Fine-tune an enhancement layer's synthesis on the symbols its encoder really sends.

    nice -n 5 .venv/bin/python tools/tune_synthesis.py --cache runs/proxy_crops.pt \
        --bases runs/base_prefix.pt --init weights/enhance/default.safetensors --minutes 45 \
        --out runs/tuned.safetensors

A layer is trained with uniform noise standing in for rounding (tools/train_enhance.py), but its
encoder sends rounded symbols, moved toward zero by the ladder's dead zone
(vqcli.rate.ladder_deadzone). Here only the synthesis learns, on those symbols; the analysis, mean
and features stay, so every image's symbols, and the tables that code them, stay as they were:
the same bytes decode to a better image. Each sample draws a level anywhere between the trained
ones (the ladder interpolates them) and a base (the crop's full one or a prefix, in whole 8-bit
values as a reader has them); the loss weighs each level's MSE as the layer's training did.

With --light the synthesis trained is a light one (EnhanceConfig.light_synthesis: half the
channels at 1/2 and full resolution), cut from --init's by keeping the channels the next layer
weighs most (lightened), then trained as above; --cosine decays the learning rate over --minutes
(runs/data_all: links to the images of train/ and permissive/ in one folder):

    nice -n 5 .venv/bin/python tools/tune_synthesis.py --data runs/data_all --crops 2400 \
        --init weights/enhance/834be7664f439036.safetensors --light --cosine --lr 5e-4 --minutes 55 \
        --out runs/light.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from train_enhance import STEPS, descend, draw, load_crops, psnr

from vqcli.enhance import Enhancement
from vqcli.enhancecoding import load_enhancement, save_enhancement
from vqcli.rate import ladder_deadzone
from vqcli.weights import load_weights

LAM = 0.1
"""The layer training's lambda at step 1 (train_enhance --lam): only the levels' weights matter here."""


def sent(net, x: torch.Tensor, b: torch.Tensor, feats: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The symbols the encoder sends for crops x over bases b at levels [B] (whole or not)."""
    top = net.cfg.levels - 1
    dz = torch.tensor([ladder_deadzone(lv / top) for lv in level.tolist()], device=x.device)  # one transfer
    return net.quantize(net.analyse(x, b, feats, net.steps(level)), dz[:, None, None, None])


def level_weight(level: torch.Tensor) -> torch.Tensor:
    """LAM / step^2 * 255^2 at levels [B], the steps interpolated in log space as the layer's."""
    log_steps = torch.tensor(STEPS, device=level.device).log()
    lo = level.floor().long().clamp(max=len(STEPS) - 2)
    t = level - lo
    step = ((1 - t) * log_steps[lo] + t * log_steps[lo + 1]).exp()
    return LAM / step ** 2 * 255 ** 2


def whole(b: torch.Tensor) -> torch.Tensor:
    """Base pixels in whole 8-bit values, as a reader's decoder has them."""
    return (b * 255).round() / 255


@torch.no_grad()
def lightened(net: Enhancement) -> Enhancement:
    """The same layer with a light synthesis (EnhanceConfig.light_synthesis) to train, cut from
    the original: the channels at 1/2 and full resolution that the next layer weighs most, each
    with the weights it had."""
    out = Enhancement(dataclasses.replace(net.cfg, light_synthesis=True))
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("synthesis.") or k.startswith("synthesis.0.")}
    missing, unexpected = out.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("synthesis.") for k in missing):
        raise ValueError(f"not an enhancement layer's state: {missing} {unexpected}")
    src, dst = net.synthesis, out.synthesis
    half = _strongest(src[5].weight, dst[5].in_channels)  # 1/2-resolution channels, by the next layer's weights
    full = _strongest(src[8].weight, dst[8].in_channels)  # full-resolution channels

    def sub(channels: torch.Tensor) -> torch.Tensor:  # a pixel shuffle's input channels of its output channels
        return (4 * channels[:, None] + torch.arange(4)).reshape(-1)

    dst[2].weight.copy_(src[2].weight[sub(half)])
    dst[2].bias.copy_(src[2].bias[sub(half)])
    dst[5].weight.copy_(src[5].weight[sub(full)][:, half])
    dst[5].bias.copy_(src[5].bias[sub(full)])
    dst[8].weight.copy_(src[8].weight[:, full])
    dst[8].bias.copy_(src[8].bias)
    return out


def _strongest(weight: torch.Tensor, n: int) -> torch.Tensor:
    """The n input channels of a convolution's weight [out, in, k, k] with the largest norm, in order."""
    return weight.pow(2).sum((0, 2, 3)).argsort(descending=True)[:n].sort().values


@torch.no_grad()
def evaluate(net, x: torch.Tensor, b: torch.Tensor) -> list[float]:
    """PSNR of the val crops at each trained level, with the symbols the encoder sends."""
    b = whole(b)
    feats = net.features(b)
    out = []
    for lv in range(net.cfg.levels):
        level = torch.full((x.shape[0],), float(lv), device=x.device)
        out.append(round(psnr(net.synthesise(sent(net, x, b, feats, level), b, feats, net.steps(level)), x), 4))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", type=Path, required=True, help="the layer (.safetensors) to tune")
    ap.add_argument("--base", type=Path, default=Path("weights/default.safetensors"))
    ap.add_argument("--cache", type=Path, help="crops and base reconstructions (tools/proxy_enhance.py --cache)")
    ap.add_argument("--bases", type=Path, help="prefix reconstructions of the cache's crops (train_enhance --bases)")
    ap.add_argument("--data", type=Path, help="an image folder to cut crops from instead of --cache")
    ap.add_argument("--crops", type=int, default=2400, help="crops cut from --data")
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--max-steps", type=int, default=10 ** 9)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--light", action="store_true",
                    help="train a light synthesis (EnhanceConfig.light_synthesis) cut from --init's")
    ap.add_argument("--cosine", action="store_true", help="lr decays to zero over --minutes (cosine)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if (args.cache is None) == (args.data is None):
        raise SystemExit("give one of --cache and --data")
    torch.manual_seed(0)
    dev = torch.device(args.device)
    layer = load_enhancement(args.init, dev)
    net = (lightened(layer.net).to(dev) if args.light else layer.net).requires_grad_(False)
    net.synthesis.requires_grad_(True).train()
    tx, tb, vx, vb, extra = load_crops(args, load_weights(args.base, dev))
    tx, tb, vx, vb = tx.to(dev), tb.to(dev), vx.to(dev), vb.to(dev)
    opt = torch.optim.Adam(net.synthesis.parameters(), lr=args.lr)
    log = [{"step": 0, "val_psnr": evaluate(net, vx, vb)}]
    print(json.dumps(log[-1]), flush=True)
    t0, step = time.time(), 0
    while time.time() - t0 < 60 * args.minutes and step < args.max_steps:
        x, b = draw(tx, tb, extra, args.batch)
        b = whole(b)
        level = torch.rand(args.batch, device=dev) * (net.cfg.levels - 1)
        with torch.no_grad():
            feats = net.features(b)
            q = sent(net, x, b, feats, level)
        mse = (net.synthesise(q, b, feats, net.steps(level)) - x).pow(2).mean((1, 2, 3))
        if args.cosine:
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.time() - t0) / (60 * args.minutes))))
        descend(opt, (level_weight(level) * mse).mean(), net.synthesis)
        step += 1
        if step % 500 == 0 or step == args.max_steps:
            log.append({"step": step, "minutes": round((time.time() - t0) / 60, 1), "val_psnr": evaluate(net, vx, vb)})
            print(json.dumps(log[-1]), flush=True)
    net = net.cpu().eval().requires_grad_(False)
    training = {**layer.training, "tuned_synthesis": {"from": layer.model_id, "steps": step, "lr": args.lr,
                                                      "light": args.light, "val_crops": log[-1]["val_psnr"]}}
    # the same symbols and the same tables: the counts are the layer's own
    mid = save_enhancement(args.out, net, layer.counts, layer.base_id, training)
    print(json.dumps({"steps": step, "out": str(args.out), "model_id": mid}), flush=True)


if __name__ == "__main__":
    main()
