"""The enhancement layer: a finer latent that lifts a base model's reconstruction above the base
autoencoder's ceiling.

The base (a VQVAE) keeps 32 numbers per 8x8 pixels and cannot reproduce an image better than its
autoencoder does (about 31 dB on val). The enhancement adds C numbers per 4x4 pixels, scalar-
quantized: an analysis transform of (image - base, base) gives the latent, a synthesis transform
of (latent, the base's features) gives a residual added to the base. The decoder has the base's
decoded pixels, so the layer spends bits only on what the base missed.

Quantization: symbol = round((y - mean) / step), where `mean` is predicted from the base alone
and `step` is the level's per-channel step (levels trade rate for distortion). Both are floats
that only shape the reconstruction; the symbols' probabilities come from integer tables chosen
by integer contexts (vqcli.enhancecoding), so parsing is exact on every device.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

FACTOR = 4
"""Pixels per latent cell side."""
RESIDUAL_GAIN = 32.0
"""The residual is small (about 0.03 RMS at 29 dB): scaled up at the analysis input."""
LATENT_GAIN = 16.0
"""A fresh analysis transform's output is about 0.02, far below one quantization step."""
OUTPUT_GAIN = 0.1


@dataclass(frozen=True)
class EnhanceConfig:
    """Shape of an enhancement layer."""

    channels: int = 32
    """C, latent numbers per 4x4 pixels."""
    width: int = 64
    """Hidden width of every transform."""
    levels: int = 6
    """Quantization levels (finest first), each with its own steps and tables."""
    radius: int = 31
    """Symbols lie in [-radius, radius]."""
    same_channel: bool = False
    """The contexts also see the channel's own neighbours: each channel coded in two passes of a
    checkerboard, the second seeing the first (channel_contexts). Absent in the first layers."""
    four_passes: bool = False
    """With same_channel: four passes of a 2x2 grid instead of two, so that three quarters of the
    cells see neighbours of their own channel, not half. Absent in the first layers."""
    predictor: bool = False
    """The earlier channels' activity is an integer linear prediction of each channel's |symbol|
    (the `predictor` tensor, channel_contexts) instead of their mean. Absent in the first layers."""
    light_synthesis: bool = False
    """A synthesis of half the channels at 1/2 and full resolution (synthesis). Absent in the
    first five layers."""

    def __post_init__(self) -> None:
        flags = (self.same_channel, self.four_passes, self.predictor, self.light_synthesis)
        if not (1 <= self.channels <= 256 and 1 <= self.width <= 1024 and 1 <= self.levels <= 64
                and 1 <= self.radius <= 1024 and all(isinstance(f, bool) for f in flags)
                and self.same_channel >= self.four_passes):
            raise ValueError(f"enhancement config out of range: {self}")

    @property
    def alphabet(self) -> int:
        return 2 * self.radius + 1

    @property
    def contexts(self) -> int:
        """Context buckets per level and channel (each with its own table)."""
        return BUCKETS * (1 + NEIGHBOUR_BUCKETS) if self.same_channel else BUCKETS

    @property
    def passes(self) -> int:
        """Coder passes per channel (pass_layout)."""
        return 4 if self.four_passes else 2 if self.same_channel else 1

    def to_dict(self) -> dict:
        out = asdict(self)
        for later in ("four_passes", "predictor", "light_synthesis"):  # absent, as the layers before them wrote it
            if not out[later]:
                del out[later]
        return out


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2 if stride == 1 else (k - stride) // 2 + (k % 2))


def synthesis(c: int, w: int, light: bool = False) -> nn.Sequential:
    """(latent, features) [c + w, h, w] -> residual [3, 4h, 4w]: two layers at 1/4 resolution, one
    at 1/2 and one at full resolution, w and 16 channels wide there, or w / 2 and 8 with light
    (EnhanceConfig.light_synthesis: at 768x512 on 2 CPU threads about 25 ms instead of 85, where
    the full-resolution and 1/2-resolution layers took most)."""
    half, full = (w // 2, 8) if light else (w, 16)
    return nn.Sequential(_conv(c + w, w), nn.SiLU(), _conv(w, 4 * half), nn.PixelShuffle(2), nn.SiLU(),
                         _conv(half, 4 * full), nn.PixelShuffle(2), nn.SiLU(), _conv(full, 3))


class Enhancement(nn.Module):
    """Analysis, base features, mean and synthesis transforms, and the levels' log steps."""

    def __init__(self, cfg: EnhanceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, w = cfg.channels, cfg.width
        self.analysis = nn.Sequential(_conv(6, w, 4, 2), nn.SiLU(), _conv(w, w), nn.SiLU(),
                                      _conv(w, w, 4, 2), nn.SiLU(), _conv(w, c))
        self.context = nn.Sequential(_conv(3, w, 4, 2), nn.SiLU(), _conv(w, w, 4, 2), nn.SiLU(), _conv(w, w))
        self.mean = nn.Sequential(nn.SiLU(), _conv(w, c))
        self.synthesis = synthesis(c, w, cfg.light_synthesis)
        self.log_step = nn.Parameter(torch.zeros(cfg.levels, c))
        if cfg.predictor:  # fitted after training, with the tables (integers: part of the coder)
            self.register_buffer("predictor", torch.zeros(c, 1 + 2 * c, dtype=torch.int32))

    def context_rule(self) -> ContextRule:
        """How the coder picks this layer's contexts."""
        return ContextRule(self.cfg.passes, self.predictor.cpu() if self.cfg.predictor else None)

    def features(self, base: torch.Tensor) -> torch.Tensor:
        """The base's features [B, width, H/4, W/4] from its reconstruction [B, 3, H, W] in [0, 1]."""
        return self.context(base * 2 - 1)

    def steps(self, level: float | torch.Tensor) -> torch.Tensor:
        """Per-channel quantization steps [C, 1, 1] of a level, between two trained levels
        interpolated in log space ([B, C, 1, 1] for a tensor [B] of levels, whole or not)."""
        if isinstance(level, torch.Tensor):
            if not level.is_floating_point():
                return self.log_step[level].exp()[..., None, None]
            lo = level.floor().long().clamp(0, self.cfg.levels - 1)
            t = (level - lo)[:, None]
            mixed = (1 - t) * self.log_step[lo] + t * self.log_step[(lo + 1).clamp(max=self.cfg.levels - 1)]
            return mixed.exp()[..., None, None]
        lo = min(int(level), self.cfg.levels - 1)
        hi = min(lo + 1, self.cfg.levels - 1)
        t = level - lo
        return ((1 - t) * self.log_step[lo] + t * self.log_step[hi]).exp()[:, None, None]

    def analyse(self, x: torch.Tensor, base: torch.Tensor, feats: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """The latent in units of the steps, before rounding: (y - mean) / step."""
        y = self.analysis(torch.cat([(x - base) * RESIDUAL_GAIN, base * 2 - 1], 1)) * LATENT_GAIN
        return (y - self.mean(feats)) / steps

    def quantize(self, v: torch.Tensor, deadzone: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Symbols (float, whole numbers within the radius) of a latent v in step units: v moved
        deadzone (a number, or a tensor broadcast against v) toward zero, then rounded. The decoder
        does not know the dead zone (it only reads symbols): a wider zero bin is the encoder's
        choice, fewer bits for a little distortion."""
        if isinstance(deadzone, torch.Tensor) or deadzone:
            v = v.sign() * (v.abs() - deadzone).clamp_min(0)
        return v.round().clamp(-self.cfg.radius, self.cfg.radius)

    def synthesise(self, q: torch.Tensor, base: torch.Tensor, feats: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """The enhanced reconstruction from the (rounded) latent q in step units."""
        y = q * steps + self.mean(feats)
        return base + self.synthesis(torch.cat([y, feats], 1)) * OUTPUT_GAIN

    @torch.no_grad()
    def permute_channels(self, order: torch.Tensor) -> None:
        """Put latent channel order[i] at place i (in place): the same codec, its channels coded
        in another order. The coder's contexts see the earlier channels, so busy channels first
        gives the later ones more to condition on."""
        c = self.cfg.channels
        if sorted(order.tolist()) != list(range(c)):
            raise ValueError(f"not a permutation of {c} channels: {order.tolist()}")
        if self.cfg.predictor:
            raise ValueError("permute the channels before fitting the predictor: it is fitted to their order")
        for conv in (self.analysis[-1], self.mean[-1]):  # the latent's producers: output channels
            conv.weight.copy_(conv.weight[order])
            conv.bias.copy_(conv.bias[order])
        first = self.synthesis[0].weight  # its consumer: the latent's input channels come first
        first[:, :c] = first[:, order].clone()
        self.log_step.copy_(self.log_step[:, order])


# -- integer contexts ------------------------------------------------------------------------------
ACTIVITY_EDGES = (1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64, 90, 128)
"""Bucket edges of the context activity (mean |symbol| of the earlier channels' 3x3 neighbourhood,
in 1/16): 15 buckets, about two per octave."""
BUCKETS = len(ACTIVITY_EDGES) + 1


def box_abs(plane: torch.Tensor) -> torch.Tensor:
    """3x3 sums of |symbols| of int64 planes [..., h, w] (outside the grid counts 0)."""
    a = nn.functional.pad(plane.abs(), (1, 1, 1, 1))
    rows = a[..., :, :-2] + a[..., :, 1:-1] + a[..., :, 2:]  # separable: 4 additions, not 8
    return rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]


def bucket(running: torch.Tensor, channel: int) -> torch.Tensor:
    """Context bucket (int64) of channel `channel` from the running sum of box_abs over channels
    0..channel-1: integer arithmetic only, so encoder and decoder agree on any device."""
    if channel == 0:
        return torch.zeros_like(running)
    return _activity_bucket((16 * running) // (9 * channel))


NEIGHBOUR_EDGES = (1, 3, 6, 10)
"""Bucket edges of the sum of |symbols| of a later-pass cell's 4 neighbours in its own channel
(all from earlier passes): 5 buckets."""
NEIGHBOUR_BUCKETS = len(NEIGHBOUR_EDGES) + 1
PREDICTOR_SHIFT = 12
"""Fixed point of the predictor's weights: a prediction is 16 x the expected |symbol|, shifted."""


@dataclass(frozen=True, eq=False)
class ContextRule:
    """How a layer's coder picks each symbol's context (EnhanceConfig): its passes per channel, and
    the activity predictor (int32 [C, 1 + 2C]) or None for the earlier channels' mean activity."""

    passes: int = 1
    predictor: torch.Tensor | None = None


def first_pass(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """bool [h, w]: the cells of a checkerboard's first pass, (y + x) even: every other cell's 4
    neighbours are among them."""
    return (torch.arange(h, device=device)[:, None] + torch.arange(w, device=device)) % 2 == 0


def pass_layout(h: int, w: int, passes: int, device: torch.device | str = "cpu"
                ) -> list[tuple[torch.Tensor | None, str | None]]:
    """(cells bool [h, w] or None for all, neighbours "cross" / "diagonal" / None) of each pass of
    a channel, in coding order. 2: a checkerboard. 4: a 2x2 grid, (even, even) cells first, then
    (odd, odd) seeing their 4 diagonal neighbours, then the rest seeing their 4 direct ones, every
    one of them coded in an earlier pass."""
    if passes == 1:
        return [(None, None)]
    if passes == 2:
        first = first_pass(h, w, device)
        return [(first, None), (~first, "cross")]
    y = torch.arange(h, device=device)[:, None] % 2
    x = torch.arange(w, device=device) % 2
    return [((y == 0) & (x == 0), None), ((y == 1) & (x == 1), "diagonal"),
            ((y == 0) & (x == 1), "cross"), ((y == 1) & (x == 0), "cross")]


def _neighbour_bucket(plane: torch.Tensor, near: str = "cross") -> torch.Tensor:
    """Bucket of the sums of |symbols| of each cell's 4 direct (cross) or diagonal neighbours, of
    int64 planes [..., h, w] (outside counts 0)."""
    a = nn.functional.pad(plane.abs(), (1, 1, 1, 1))
    if near == "cross":
        s = a[..., :-2, 1:-1] + a[..., 2:, 1:-1] + a[..., 1:-1, :-2] + a[..., 1:-1, 2:]
    else:
        s = a[..., :-2, :-2] + a[..., :-2, 2:] + a[..., 2:, :-2] + a[..., 2:, 2:]
    return _bucket_of(s, NEIGHBOUR_EDGES)


PREDICTOR_LIMIT = 1 << 31
"""A layer's predictor_bound must stay below it: channel_contexts sums in int32."""


def predictor_bound(predictor: torch.Tensor, radius: int) -> int:
    """The largest |sum| a predictor row can reach before its shift, with symbols within the
    radius (every weight counted, also those of the later channels a row ignores); the shipped
    layer's is 2.4 million."""
    p = predictor.long().abs()
    c = p.shape[0]
    return int((p[:, 0] + 9 * radius * p[:, 1:1 + c].sum(1) + radius * p[:, 1 + c:].sum(1)).max())


def _activity_bucket(m: torch.Tensor) -> torch.Tensor:
    return _bucket_of(m, ACTIVITY_EDGES)


@functools.cache
def _bucket_table(edges: tuple[int, ...], device: str) -> torch.Tensor:
    return torch.bucketize(torch.arange(edges[-1] + 1), torch.tensor(edges), right=True).to(device)


def _bucket_of(m: torch.Tensor, edges: tuple[int, ...]) -> torch.Tensor:
    """torch.bucketize(m, edges, right=True) (int64) of integers m, edges positive and rising, by
    table lookup: several times faster on the coder's planes, and the same integers."""
    return _bucket_table(edges, str(m.device))[m.clamp(0, edges[-1])]


PREDICTOR_CELLS = 1 << 20
"""Later channels' predictions that one known channel updates at a time: as many planes as fit
this many cells, at least two. A big image's temporaries stay at two planes (at 24 MP, 1.39 GB of
encode peak instead of 1.47 GB with eight, at the same speed); a small one's channels go in one
call (768x512: one update per channel instead of about 250 in all)."""


def channel_contexts(sym: torch.Tensor, rule: ContextRule = ContextRule()
                     ) -> Iterator[tuple[int, torch.Tensor | None, torch.Tensor]]:
    """(c, cells, context buckets [..., h, w]) of symbols [..., C, h, w], pass by pass in coding
    order (pass_layout; cells None: one pass of every cell). Channel c's activity bucket comes from
    channels < c; a later-pass bucket also holds the activity of its neighbours of earlier passes
    in its own channel. Each pass is yielded before its symbols are read, so a decoder may fill
    sym[..., c, :, :] in place (a shared numpy view).

    With a predictor, channel c's bucket is that of (w[0] + sum over j < c of (w[1 + j] box_j +
    w[1 + C + j] |s_j|)) >> PREDICTOR_SHIFT, w = predictor[c], box_j the 3x3 sums of |symbols| of
    channel j: integers only. The sums are kept for every channel (int32: predictor_bound), and
    each channel, once known, adds its terms to the later ones, PREDICTOR_CELLS at a time."""
    h, w = sym.shape[-2:]
    n = sym.shape[-3]
    if rule.predictor is None:
        running = torch.zeros((*sym.shape[:-3], h, w), dtype=torch.int64, device=sym.device)
    else:
        p = rule.predictor.to(sym.device, torch.int32)
        acc = p[:, 0, None, None].expand(sym.shape).clone()
        w_box, w_abs = p[:, 1:1 + n, None, None], p[:, 1 + n:, None, None]
        block = max(2, PREDICTOR_CELLS // max(1, sym[..., 0, :, :].numel()))
    layout = pass_layout(h, w, rule.passes, sym.device)
    for c in range(n):
        k = bucket(running, c) if rule.predictor is None else _activity_bucket(acc[..., c, :, :] >> PREDICTOR_SHIFT)
        near_buckets: dict[str, torch.Tensor] = {}
        for cells, near in layout:
            if near is None:
                yield c, cells, k
                continue
            # the earlier passes are in now. A 2x2 grid's second cross pass sees the same cells
            # (of the first two passes) as its first: their buckets serve both.
            if near not in near_buckets:
                near_buckets[near] = BUCKETS + k * NEIGHBOUR_BUCKETS + _neighbour_bucket(sym[..., c, :, :].long(), near)
            yield c, cells, near_buckets[near]
        plane = sym[..., c, :, :].long()
        if rule.predictor is None:
            running += box_abs(plane)
            continue
        box, centre = box_abs(plane).int().unsqueeze(-3), plane.abs().int().unsqueeze(-3)
        for lo in range(c + 1, n, block):
            hi = min(n, lo + block)
            acc[..., lo:hi, :, :] += box * w_box[lo:hi, c]
            acc[..., lo:hi, :, :] += centre * w_abs[lo:hi, c]


def contexts(sym: torch.Tensor, rule: ContextRule = ContextRule()) -> torch.Tensor:
    """Context buckets of every symbol of symbols [..., C, h, w] (channel_contexts' passes joined)."""
    out = torch.empty(sym.shape, dtype=torch.int64, device=sym.device)
    for c, cells, ctx in channel_contexts(sym, rule):
        if cells is None:
            out[..., c, :, :] = ctx
        else:
            out[..., c, :, :] = torch.where(cells, ctx, out[..., c, :, :])
    return out
