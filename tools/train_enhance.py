"""Train an enhancement layer (vqcli/enhance.py) over a frozen base model, then write its weights.

    nice -n 15 .venv/bin/python tools/train_enhance.py --cache runs/proxy_crops.pt \
        --init runs/proxy_0.1b.pt --minutes 60 --out runs/enh.safetensors
    python tools/train_enhance.py --data .gpu/data --device cuda --init weights/enhance/default.safetensors \
        --minutes 8 --out out/gpu/enhance.safetensors          (a GPU burst: make train-gpu-enhance)

The crops and the base's reconstruction of them (all stages) come from the cache that
tools/proxy_enhance.py builds (--cache there), or are cut from --data and reconstructed by the
base on --device at the start (every stage, and prefixes of 3, 5 and 8 stages, as --bases
gives them: each sample's base is one of them, so that the layer refines bases of every
quality). Every training sample draws one of the levels; level l has its own per-channel steps
and loss bpp + lam / step_l^2 * 255^2 * MSE (uniform noise for rounding; the rate is a Gaussian
per channel and context bucket, the context taken from the rounded earlier channels as the
coder takes it, without --same-channel's part; with --coder-contexts, every bucket of the --init
layer's coder, its passes and predictor included). At the end the channels are put busiest first
(busiest_first), with --predictor the activity predictor is fitted to that order
(fit_predictor), and the symbol counts of every level, channel and context over the training
crops (table_crops) become the coder's integer tables. A rerun with --resume CKPT --max-steps
<its step> only recounts them. A run with --coder-contexts resumes only with the --init layer it
started from: the contexts follow that layer's channel order, which the written layer changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from vqcli.enhance import (
    BUCKETS,
    PREDICTOR_LIMIT,
    PREDICTOR_SHIFT,
    ContextRule,
    EnhanceConfig,
    Enhancement,
    box_abs,
    contexts,
    predictor_bound,
)
from vqcli.enhancecoding import count_symbols, load_enhancement, save_enhancement
from vqcli.weights import load_weights

STEPS = (0.7, 1.0, 1.4, 2.0, 2.8, 4.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 1) * 255).round() - (b * 255).round()).pow(2).mean((1, 2, 3))
    return float((10 * torch.log10(255 ** 2 / mse.clamp(min=1e-10))).mean())


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, net: torch.nn.Module) -> None:
    """One optimizer step on loss, the network's gradient norm clipped at 1."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()


@torch.no_grad()
def cut_crops(base, folder: Path, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """n random crops of the images in folder (float, on the base's device), the base's
    reconstruction with every stage, and uint8 ones with the first 3, 5 and 8 stages."""
    from vqcli.images import find_images, load_image
    from vqcli.model import to_tensor

    files = [f for f in find_images(folder) if min(load_image(f).rgb.shape[:2]) >= size]
    if not files:
        raise SystemExit(f"{folder}: no image of at least {size}x{size}")
    g = torch.Generator().manual_seed(0)
    dev = next(base.model.parameters()).device
    crops = []
    for _ in range(n):
        rgb = load_image(files[int(torch.randint(len(files), (1,), generator=g))]).rgb
        y = int(torch.randint(rgb.shape[0] - size + 1, (1,), generator=g))
        x = int(torch.randint(rgb.shape[1] - size + 1, (1,), generator=g))
        crops.append(to_tensor(rgb[y:y + size, x:x + size])[0])
    tx = torch.stack(crops).to(dev)
    idx = torch.cat([base.model.encode(tx[i:i + 64]) for i in range(0, n, 64)])
    tb = torch.cat([base.model.decode(idx[i:i + 64]) for i in range(0, n, 64)]).clamp(0, 1)
    prefixes = [torch.cat([(base.model.decode(idx[i:i + 64, :k]).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
                           for i in range(0, n, 64)]) for k in (3, 5, 8) if k < base.config.stages]
    return tx, tb, prefixes


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
    c = torch.arange(q.shape[1], device=q.device).view(1, -1, 1, 1)
    s = log_scale[level.view(-1, 1, 1, 1), c, ctx].exp().clamp(min=0.05)
    n = torch.distributions.Normal(0.0, s)
    p = (n.cdf(q + 0.5) - n.cdf(q - 0.5)).clamp(min=1e-9)
    return -(p.log() / math.log(2)).sum((1, 2, 3))


@torch.no_grad()
def initial_log_scale(net: Enhancement, x: torch.Tensor, b: torch.Tensor, rule: ContextRule, buckets: int
                      ) -> torch.Tensor:
    """log of the RMS symbol per level, channel and context bucket (at least 0.1) on crops."""
    cfg = net.cfg
    out = torch.full((cfg.levels, cfg.channels, buckets), math.log(0.5))
    feats = net.features(b)
    for lv in range(cfg.levels):
        q = net.quantize(net.analyse(x, b, feats, net.steps(float(lv))))
        ctx = contexts(q.long(), rule)
        for c in range(cfg.channels):
            for k in range(buckets):
                v = q[:, c][ctx[:, c] == k]
                if v.numel() >= 20:
                    out[lv, c, k] = math.log(max(0.1, float(v.float().pow(2).mean().sqrt())))
    return out


def with_config(net: Enhancement, cfg: EnhanceConfig) -> Enhancement:
    """The same network under another coding config (EnhanceConfig: passes, predictor); a
    predictor it gains starts at zero, to be fitted (fit_predictor)."""
    out = Enhancement(cfg)
    missing, _ = out.load_state_dict({k: v for k, v in net.state_dict().items() if k != "predictor"}, strict=False)
    if set(missing) - {"predictor"}:
        raise ValueError(f"not the same network: {missing}")
    return out.eval()


@torch.no_grad()
def fit_predictor(net: Enhancement, x: torch.Tensor, b: torch.Tensor, levels: tuple[int, ...] = (1, 3)) -> torch.Tensor:
    """Integer predictor weights [C, 1 + 2C] (EnhanceConfig.predictor): for each channel, the
    least-squares fit of its |symbol| to 1 and the 3x3 sum and centre |symbol| of every earlier
    channel, over crops at two levels, in channel_contexts' fixed point. Against the earlier
    channels' plain mean activity: 0.5-1.5 % fewer bits at the fine levels (training photos)."""
    sym = torch.cat([net.quantize(net.analyse(x[i:i + 64], b[i:i + 64], net.features(b[i:i + 64]),
                                              net.steps(float(lv)))).long()
                     for lv in levels for i in range(0, len(x), 64)])
    box, centre = box_abs(sym).double(), sym.abs().double()
    c_all = sym.shape[1]
    out = torch.zeros(c_all, 1 + 2 * c_all, dtype=torch.int32)
    scale = 16 * (1 << PREDICTOR_SHIFT)  # channel_contexts buckets 16 x |symbol|
    for c in range(c_all):
        rows = [torch.ones(box[:, 0].numel(), 1, dtype=torch.float64)]
        rows += [f[:, :c].permute(0, 2, 3, 1).reshape(-1, c) for f in (box, centre)] if c else []
        a = torch.linalg.lstsq(torch.cat(rows, 1), centre[:, c].reshape(-1, 1)).solution[:, 0] * scale
        out[c, 0] = int(a[0].round())
        out[c, 1:1 + c] = a[1:1 + c].round().int()
        out[c, 1 + c_all:1 + c_all + c] = a[1 + c:].round().int()
    if predictor_bound(out, net.cfg.radius) >= PREDICTOR_LIMIT:
        raise ValueError("the fitted predictor's sums do not fit int32 (predictor_bound)")
    return out


def coder_ready(net: Enhancement, cfg: EnhanceConfig, x: torch.Tensor, b: torch.Tensor) -> Enhancement:
    """The trained network as a coder of config cfg: channels busiest first, then the predictor (if
    cfg has one) fitted to that order, on crops x over bases b."""
    net = with_config(net, dataclasses.replace(cfg, predictor=False))
    net.permute_channels(busiest_first(net, x[:256], b[:256]))
    if cfg.predictor:
        net = with_config(net, cfg)
        net.predictor.copy_(fit_predictor(net, x[::4][:640], b[::4][:640]))
    return net


def table_crops(x: torch.Tensor, b: torch.Tensor, prefixes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The crops the tables are counted on: each crop over its full base and, where there are
    prefix reconstructions (uint8), again over one of them in turn. The encoder refines bases of
    every quality, and tables counted over full bases alone cost 2-3 % more bits at the fine levels
    over a quality-60 base (measured on training photos)."""
    if not prefixes:
        return x, b
    mixed = b.clone()
    for k, prefix in enumerate(prefixes, 1):  # crop i over prefix i % (len + 1), 0 the full base
        pick = torch.arange(k, len(x), len(prefixes) + 1)
        mixed[pick] = prefix[pick].float() / 255
    return torch.cat([x, x]), torch.cat([b, mixed])


@torch.no_grad()
def busiest_first(net: Enhancement, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The latent channels ordered by mean |symbol| over every level, largest first: coded in this
    order, each channel's context sees the busiest ones (the tables' bits fall 2-10 % at the
    coarse levels, measured on training photos)."""
    feats = net.features(b)
    busy = sum(net.quantize(net.analyse(x, b, feats, net.steps(float(lv)))).abs().mean((0, 2, 3))
               for lv in range(net.cfg.levels))
    return torch.argsort(busy, descending=True, stable=True)


def load_crops(args: argparse.Namespace, base) -> tuple[torch.Tensor, ...]:
    """(train crops, their full bases, val crops, their bases, prefix bases) from --cache and
    --bases, or cut from --data and reconstructed by the base model."""
    if args.cache is not None:
        data = torch.load(args.cache)
        extra = list(torch.load(args.bases).values()) if args.bases is not None else []
        return data["train_x"], data["train_b"], data["val_x"], data["val_b"], extra
    tx, tb, extra = cut_crops(base, args.data, args.crops, args.crop_size)
    return tx, tb, tx[:8], tb[:8], extra  # no val here: a burst watches its training loss


def draw(tx: torch.Tensor, tb: torch.Tensor, extra: list[torch.Tensor], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of crops and their bases, each base the crop's full one or one of its
    prefixes (uint8), so that the layer learns to refine bases of every quality."""
    i = torch.randint(0, tx.shape[0], (batch,))
    x, b = tx[i], tb[i]
    if extra:
        pick = torch.randint(0, len(extra) + 1, (batch,))
        for j in range(batch):
            if pick[j] > 0:
                b[j] = extra[pick[j] - 1][i[j].cpu()].to(b.device).float() / 255
    return x, b


@torch.no_grad()
def evaluate(net: Enhancement, x: torch.Tensor, b: torch.Tensor, log_scale: torch.Tensor,
             rule: ContextRule) -> list[dict]:
    feats = net.features(b)
    rows = []
    for lv in range(net.cfg.levels):
        q = net.quantize(net.analyse(x, b, feats, net.steps(float(lv))))
        lvl = torch.full((x.shape[0],), lv, device=x.device)
        bits = rate_bits(q, contexts(q.long(), rule), log_scale, lvl)
        rows.append({"level": lv, "psnr": round(psnr(net.synthesise(q, b, feats, net.steps(float(lv))), x), 3),
                     "bpp": round(float(bits.mean() / (x.shape[2] * x.shape[3])), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=Path("weights/default.safetensors"))
    ap.add_argument("--cache", type=Path, help="crops and base reconstructions (tools/proxy_enhance.py --cache)")
    ap.add_argument("--data", type=Path, help="an image folder to cut crops from instead of --cache")
    ap.add_argument("--crops", type=int, default=2400, help="crops cut from --data")
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--init", type=Path, help="a layer's weights (.safetensors) to continue, or a network saved "
                    "by tools/proxy_enhance.py --save")
    ap.add_argument("--resume", type=Path, help="a checkpoint of this script (--ckpt)")
    ap.add_argument("--ckpt", type=Path, default=Path("runs/enh.ckpt"))
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--lam", type=float, default=0.1, help="lambda at step 1")
    ap.add_argument("--lr", type=float, default=3e-4, help="learning rate (also on --resume)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--count-crops", type=int, default=1200, help="training crops counted for the tables")
    ap.add_argument("--bases", type=Path, help="more base reconstructions of the same crops (uint8, one per "
                    "stage prefix: {k: [N, 3, H, W]}), drawn at random with the cache's, so that the layer "
                    "learns to refine bases of every quality")
    ap.add_argument("--same-channel", action="store_true",
                    help="count the tables with same-channel contexts (a layer continued from one keeps them); "
                    "the training's rate estimate uses the cross-channel contexts unless --coder-contexts")
    ap.add_argument("--four-passes", action="store_true",
                    help="same-channel contexts in four passes of a 2x2 grid (EnhanceConfig.four_passes)")
    ap.add_argument("--predictor", action="store_true",
                    help="fit an activity predictor for the contexts (EnhanceConfig.predictor)")
    ap.add_argument("--coder-contexts", action="store_true",
                    help="price the training's rate in the contexts of the --init layer's coder (its passes and "
                    "predictor) instead of the earlier channels' mean activity")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-steps", type=int, default=10 ** 9)
    ap.add_argument("--trained-on", default="train/ + permissive/ crops (runs/data_all)",
                    help="the training data, for the weights' summary")
    args = ap.parse_args()
    if (args.cache is None) == (args.data is None):
        raise SystemExit("give one of --cache and --data")
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cfg = EnhanceConfig(levels=len(STEPS))
    net = Enhancement(cfg)
    rule, buckets = ContextRule(), BUCKETS  # the training's rate contexts
    with torch.no_grad():
        net.log_step.copy_(torch.tensor(STEPS).log()[:, None].expand(-1, cfg.channels))
    rule_from = None  # the layer whose coder prices the rate (--coder-contexts)
    if args.init is not None and args.init.suffix == ".safetensors":
        layer = load_enhancement(args.init)
        net = layer.net
        cfg = net.cfg  # its coding config stays; training does without the predictor
        if args.coder_contexts:
            rule, buckets, rule_from = net.context_rule(), cfg.contexts, layer.model_id
        net = with_config(net, dataclasses.replace(cfg, predictor=False)).requires_grad_(True).train()
    elif args.init is not None:
        init_from_proxy(net, args.init)
    if args.coder_contexts and rule.passes == 1 and rule.predictor is None:
        raise SystemExit("--coder-contexts needs an --init layer (.safetensors) with same-channel contexts or a predictor")
    base = load_weights(args.base, dev)
    tx, tb, vx, vb, extra = load_crops(args, base)
    net, tx, tb, vx, vb = net.to(dev), tx.to(dev), tb.to(dev), vx.to(dev), vb.to(dev)
    log_scale = torch.nn.Parameter(torch.zeros(cfg.levels, cfg.channels, buckets, device=dev))
    # The rate's scales start at the symbols' spread and learn fast: they only price the latent.
    with torch.no_grad():
        log_scale.copy_(initial_log_scale(net, tx[:64], tb[:64], rule, buckets).to(dev))
    opt = torch.optim.AdamW([{"params": list(net.parameters())}, {"params": [log_scale], "lr": 30 * args.lr}],
                            lr=args.lr, weight_decay=0)
    step, log = 0, []
    if args.resume is not None:
        saved = torch.load(args.resume)
        # a layer's contexts follow its channel order: another layer's would price the wrong channels
        theirs = saved.get("rule_from", rule_from)  # a checkpoint from before this check passes
        if theirs != rule_from:
            raise SystemExit(f"{args.resume}: its rate contexts are " + (
                f"layer {theirs}'s; resume with that layer as --init and --coder-contexts" if theirs else
                "the earlier channels' mean activity; resume without --coder-contexts"))
        net.load_state_dict(saved["net"])
        log_scale.data.copy_(saved["log_scale"])
        opt.load_state_dict(saved["opt"])
        step, log = saved["step"], saved["log"]
        for group, lr in zip(opt.param_groups, (args.lr, 30 * args.lr)):  # a continuation may lower it
            group["lr"] = lr
    lam = torch.tensor([args.lam / s ** 2 for s in STEPS], device=dev)
    t0, last_ckpt = time.time(), time.time()

    def checkpoint() -> None:
        torch.save({"net": net.state_dict(), "log_scale": log_scale.detach(), "opt": opt.state_dict(),
                    "step": step, "log": log, "rule_from": rule_from}, args.ckpt)

    while time.time() - t0 < 60 * args.minutes and step < args.max_steps:
        x, b = draw(tx, tb, extra, args.batch)
        level = torch.randint(0, cfg.levels, (args.batch,), device=dev)
        feats = net.features(b)
        y = net.analyse(x, b, feats, net.steps(level))
        with torch.no_grad():
            ctx = contexts(y.round().clamp(-cfg.radius, cfg.radius).long(), rule)
        q = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        recon = net.synthesise(q, b, feats, net.steps(level))
        mse = (recon - x).pow(2).mean((1, 2, 3))
        bpp = rate_bits(q, ctx, log_scale, level) / (x.shape[2] * x.shape[3])
        descend(opt, (bpp + lam[level] * 255 ** 2 * mse).mean(), net)
        step += 1
        if step % 500 == 0:
            log.append({"step": step, "minutes": round((time.time() - t0) / 60, 1),
                        "val": evaluate(net, vx, vb, log_scale, rule)})
            print(json.dumps(log[-1]), flush=True)
        if time.time() - last_ckpt > 600:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    net = net.cpu().eval()
    val = evaluate(net, vx.cpu(), vb.cpu(), log_scale.detach().cpu(), rule)
    cx, cb = table_crops(tx[:args.count_crops].cpu(), tb[:args.count_crops].cpu(), extra)
    four = args.four_passes or cfg.four_passes
    net = coder_ready(net, dataclasses.replace(cfg, same_channel=args.same_channel or four or cfg.same_channel,
                                               four_passes=four, predictor=args.predictor or cfg.predictor), cx, cb)
    counts = count_symbols(net, cx, cb)
    save_enhancement(args.out, net, counts, base.model_id,
                     {"steps": step, "lam": args.lam, "trained_on": args.trained_on, "val_crops": val})
    print(json.dumps({"steps": step, "out": str(args.out)}), flush=True)


if __name__ == "__main__":
    main()
