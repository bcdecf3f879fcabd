"""The rate knobs of the encoder, in one torch-free place (the CLI validates with them before
loading a model): the quality scale and its default, the efforts of the code search, and the
check of a request's rate parameters."""

from __future__ import annotations

from .errors import UsageError
from .format import LEVEL_ONE

QUALITY_RANGE = (0.0, 100.0)
DEFAULT_QUALITY = 45.0
"""The rate of `vq compress` without a rate flag, for weights that name none and have no
enhancement layer: on 8 training photos with the shipped model, about the size of the former
default, 4 uniform stages."""
ENHANCED_DEFAULT_QUALITY = 67.0
"""The rate without a rate flag for weights with an enhancement layer (and none of their own): a
default that looks good, as an image tool's does. With the shipped model and layer on val, WebP
q75's PSNR in fewer bytes, decoded in about twice quality 45's time (README)."""


def check_quality(quality: float) -> None:
    """A UsageError unless quality is within QUALITY_RANGE."""
    lo, hi = QUALITY_RANGE
    if not (lo <= quality <= hi):
        raise UsageError(f"quality {quality:g}: expected {lo:g} to {hi:g}", params=("quality",))


# Encoder search (vqcli.codec.ImageEncoder): a setting of the encoder, not of the model or the file.
EFFORTS = ((1, 0.0), (4, 0.5), (16, 0.5))
"""(beam width, price factor) of each effort. 0 is the greedy encoder. Above it, each position's
codes are found by a beam search to the depth its block keeps (quantizer.beam_encode), each bit
priced at the factor times the stage map's own trade (stagemap.price): the nearest codes are not
the best path, and the cheapest good path beats the best one. The factor, on 12 val photos
(default model, BD-rate against effort 0, PSNR / MS-SSIM): beam 4 without a price -3.0 % / -2.8 %,
with 0.5 -4.3 % / -4.1 %, with 1.0 -3.7 % / -3.4 %. On all 49 val photos: effort 1 -4.1 % / -3.9 %
at 1.26x effort 0's encode time, effort 2 -5.3 % / -4.9 % at 2x (768x512, 2 cores)."""
DEFAULT_EFFORT = 1


def check_effort(effort: int | None) -> int:
    """The effort to use: None means DEFAULT_EFFORT; one outside EFFORTS is a UsageError."""
    if effort is None:
        return DEFAULT_EFFORT
    if not 0 <= effort < len(EFFORTS):
        raise UsageError(f"effort {effort}: expected 0 to {len(EFFORTS) - 1}", params=("effort",))
    return effort


RATE_PARAMS = ("stages", "quality", "bpp", "psnr")


def check_rate(stages: int | None, bpp: float | None, psnr: float | None, total: int | None = None,
               quality: float | None = None) -> None:
    """The rate parameters: at most one of them, a positive bpp, stages within 1..total (once
    known), a quality within 0..100."""
    if sum(v is not None for v in (stages, quality, bpp, psnr)) > 1:
        raise UsageError("choose at most one of stages, quality, bpp and psnr", params=RATE_PARAMS)
    if bpp is not None and not bpp > 0:
        raise UsageError(f"bpp {bpp:g}: must be positive", params=("bpp",))
    if stages is not None and not (1 <= stages and (total is None or stages <= total)):
        raise UsageError(f"stages {stages}: the model has stages 1 to {total}" if total is not None
                         else f"stages {stages}: must be at least 1", params=("stages",))
    if quality is not None:
        check_quality(quality)


# The enhancement layer (vqcli.enhance) takes over the top of the scale for weights that have one.
ENHANCE_FROM = 50.0
"""Qualities above this add an enhancement layer over a base coded at a quality of its own
(ENHANCED_LADDER). At and below it, the base's ladder is unchanged."""

ENHANCED_LADDER = (
    # quality, base quality, layer level (fraction of the coarsest), dead zone (steps)
    (ENHANCE_FROM, 50.0, 1.0, 0.15),
    (55.0, 52.0, 0.8, 0.15),
    (63.0, 60.0, 0.6, 0.15),
    (72.0, 66.0, 0.4, 0.15),
    (87.0, 75.0, 0.2, 0.0),
    (96.0, 80.0, 0.0, 0.0),
    (100.0, 85.0, 0.0, 0.0),
)
"""Knots of the enhanced ladder, linear between them, chosen on training photos (never val):
- tools/ladder_grid.py (16 training photos, 12 permissive tiles): on the convex hull of mean
  PSNR over bpp, the layer pays off from the first bit above a quality-50 base, a better base
  saves more layer bits than it costs only up to about quality 60, and a dead zone of 0.15 steps
  (vqcli.enhance.Enhancement.quantize) gains about 0.2 dB at the coarse levels and loses at the
  finest two;
- the hull's own path (base 50 to 62) was -6.1 % BD-rate in PSNR against the former ladder (base
  50 to 85, no dead zone) but +0.7 % in MS-SSIM, which a better base serves; these knots, between
  the two, are -4.0 % / -1.8 % (PSNR / MS-SSIM) on 14 other training photos; the former base
  schedule with the dead zone alone -1.5 % / -2.6 %.
Qualities are spaced so that each step adds about the same PSNR."""


def ladder_deadzone(fraction: float) -> float:
    """The dead zone the ladder quantizes a layer level with, the level given as a fraction of the
    coarsest (0 finest, 1 coarsest; between knots, linear in the level)."""
    knots = sorted((level, dz) for _, _, level, dz in ENHANCED_LADDER)
    for (l0, d0), (l1, d1) in zip(knots, knots[1:]):
        if fraction <= l1:
            return d0 if l1 == l0 else d0 + (max(fraction, l0) - l0) / (l1 - l0) * (d1 - d0)
    return knots[-1][1]


def enhanced_rate(quality: float, levels: int) -> tuple[float, int, float] | None:
    """(base quality, fixed-point enhancement level (0 = finest), dead zone) of a quality for a
    layer of `levels` levels, or None at and below ENHANCE_FROM (the base alone)."""
    if quality <= ENHANCE_FROM:
        return None
    for (q0, b0, l0, d0), (q1, b1, l1, d1) in zip(ENHANCED_LADDER, ENHANCED_LADDER[1:]):
        if quality <= q1:
            t = (quality - q0) / (q1 - q0)
            level = (l0 + t * (l1 - l0)) * (levels - 1)
            return b0 + t * (b1 - b0), round(level * LEVEL_ONE), d0 + t * (d1 - d0)
    raise ValueError(f"quality {quality:g} above the scale")  # check_quality keeps it out
