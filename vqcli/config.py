"""Model configuration and named presets (no torch import: used by the CLI for help text)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a VQ-VAE; stored as JSON in the weights file."""

    # Conv autoencoder
    downsample: int = 8
    """Total spatial downsampling factor (a power of two, >= stem)."""
    stem: int = 4
    """Pixel-unshuffle factor of the first layer: full-resolution work is a reshape, not a conv."""
    channels: tuple[int, ...] = (96, 160)
    """Width at each resolution level, from the stem level down to the latent level."""
    res_blocks: int = 2
    """Residual blocks per level (encoder and decoder)."""
    latent_dim: int = 32
    """Dimension D of the encoder output that the quantizer sees."""
    # Residual vector quantizer
    codebook_size: int = 256
    """K, codes per stage."""
    stages: int = 12
    """S, number of RVQ stages."""
    code_dim: int | None = None
    """Factorised lookup dimension (None: codes live in the latent space)."""
    l2_normalize: bool = False
    """Look up codes by cosine similarity in the factorised space."""
    beta: float = 0.25
    """Commitment loss weight."""
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    dead_threshold: float = 1.0
    """A code whose EMA count falls under this is restarted from a recent encoder output."""
    quantizer_dropout: float = 0.5
    """Share of training samples that use a random prefix of the stages."""
    rate_weight: float = 0.0
    """Entropy-constrained assignment: a code costs its squared distance plus rate_weight x the
    stage's mean squared error per bit of its code length (0: nearest code, the classic VQ)."""

    def __post_init__(self) -> None:
        levels = _log2(self.downsample) - _log2(self.stem) + 1
        if self.downsample < self.stem or levels < 1:
            raise ValueError(f"downsample {self.downsample} must be a power of two >= stem {self.stem}")
        if len(self.channels) != levels:
            raise ValueError(
                f"channels needs {levels} entries for downsample {self.downsample} with stem {self.stem}, "
                f"got {len(self.channels)}"
            )
        if self.codebook_size < 2 or self.stages < 1:
            raise ValueError("codebook_size must be >= 2 and stages >= 1")
        if self.l2_normalize and self.code_dim is None:
            raise ValueError("l2_normalize needs a factorised code_dim")
        if not 0 <= self.rate_weight < float("inf"):
            raise ValueError(f"rate_weight must be a finite number >= 0, got {self.rate_weight}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        data = dict(data)
        if "channels" in data:
            data["channels"] = tuple(data["channels"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


def _log2(n: int) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{n} is not a power of two")
    return n.bit_length() - 1


PRESETS: dict[str, ModelConfig] = {
    # A few thousand parameters: for tests and smoke runs.
    "tiny": ModelConfig(downsample=8, stem=2, channels=(8, 12, 16), res_blocks=0, latent_dim=8,
                        codebook_size=16, stages=3, dead_threshold=0.5),
    # CPU-friendly default: f8, 4x pixel-unshuffle stem, 12 stages x 256 codes (about 0.1 to 1.3 bpp).
    "cpu": ModelConfig(),
    # f8 with more width for GPU training.
    "gpu": ModelConfig(downsample=8, stem=2, channels=(96, 192, 256), res_blocks=2, latent_dim=64,
                       codebook_size=512, stages=10),
    # High fidelity: twice the latent (64 numbers per 8x8 block), wider conv levels and 24 stages
    # (raw index budget 3 bpp), so that the top of the rate ladder reaches past 31 dB; about
    # 1.6x the cpu preset's decoder work per pixel (76 vs 47 kMAC).
    "hifi": ModelConfig(downsample=8, stem=4, channels=(128, 192), res_blocks=2, latent_dim=64,
                        codebook_size=256, stages=24),
    # f16 variant: a coarser grid with more stages per bit budget.
    "f16": ModelConfig(downsample=16, stem=2, channels=(64, 96, 128, 192), res_blocks=1, latent_dim=96,
                       codebook_size=1024, stages=16),
}
DEFAULT_PRESET = "cpu"


@dataclass
class TrainConfig:
    """Training hyper-parameters (recorded in the weights' training summary)."""

    steps: int = 20000
    batch_size: int = 16
    crop: int = 128
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup: int = 500
    msssim_weight: float = 0.0
    """Weight of (1 - MS-SSIM) added to the MSE loss (0 disables it)."""
    val_every: int = 1000
    ckpt_every: int = 1000
    seed: int = 0
    workers: int = 2
    precision: str = "auto"
    """Autocast dtype of the conv network: "bf16", "fp32", or "auto" (bf16 on CUDA and on CPUs with
    native bf16, measured ~2x faster per step there; the quantizer always runs in fp32)."""
    cache: bool = False
    """Keep every decoded training image in memory (uint8): no JPEG decode per crop."""
