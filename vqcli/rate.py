"""The rate knobs of the encoder, in one torch-free place (the CLI validates with them before
loading a model): the quality scale and its default, the efforts of the code search, and the
check of a request's rate parameters."""

from __future__ import annotations

from .errors import UsageError
from .format import LEVEL_ONE

QUALITY_RANGE = (0.0, 100.0)
DEFAULT_QUALITY = 45.0
"""The rate of `vq compress` without a rate flag, for weights that name none: on 8 training
photos with the shipped model, about the size of the former default, 4 uniform stages."""


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
"""Qualities above this add an enhancement layer: the base coded at a quality rising from
ENHANCE_FROM to ENHANCED_BASE_TOP, and the layer's level falling from its coarsest to its finest
(quality 100). Measured on val photos, a layer over a mid-quality base gives more dB per bit than
the base's own top stages: the layer pays off from about 0.5 bpp. At and below it, the base's
ladder is unchanged."""
ENHANCED_BASE_TOP = 85.0


def enhanced_rate(quality: float, levels: int) -> tuple[float, int] | None:
    """(base quality, fixed-point enhancement level, 0 = finest) of a quality, or None at and below
    ENHANCE_FROM (the base alone)."""
    if quality <= ENHANCE_FROM:
        return None
    t = (quality - ENHANCE_FROM) / (100.0 - ENHANCE_FROM)  # 0 at ENHANCE_FROM, 1 at the top
    return ENHANCE_FROM + t * (ENHANCED_BASE_TOP - ENHANCE_FROM), round((1 - t) * (levels - 1) * LEVEL_ONE)
