"""Grow a trained VQ-VAE into a wider one that computes the same function (Net2Net-style).

Every conv keeps its trained weights in the top-left block of the wider one; the rows of new
output channels keep their fresh initialisation (so they carry signal and learn), and the
columns that read new input channels are zero, so that nothing new reaches an old channel: the
widened model's old channels, its first S stages and its images are the trained model's. New
latent dimensions (the encoder's new output rows) are read by no decoder weight yet; the old
codebooks get zeros there, which adds the same distance to every code and so keeps every code
choice; new stages are left uninitialised, for k-means on their first training batch.

Training then finds uses for the new width from a model that already codes every rate it did.
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .errors import VQError

SAME = ("downsample", "stem", "res_blocks", "codebook_size", "code_dim", "l2_normalize")


def check_widening(old: ModelConfig, new: ModelConfig) -> None:
    """A VQError unless `new` is `old` with as many or more channels, latent dims and stages."""
    for f in SAME:
        if getattr(old, f) != getattr(new, f):
            raise VQError(f"cannot widen: {f} differs ({getattr(old, f)} -> {getattr(new, f)})")
    if len(old.channels) != len(new.channels) or any(n < o for o, n in zip(old.channels, new.channels)) \
            or new.latent_dim < old.latent_dim or new.stages < old.stages:
        raise VQError(f"cannot widen channels {old.channels} latent {old.latent_dim} stages {old.stages} to "
                      f"channels {new.channels} latent {new.latent_dim} stages {new.stages}")


@torch.no_grad()
def widen_into(model: torch.nn.Module, trained: torch.nn.Module) -> int:
    """Copy `trained` (a VQVAE) into the wider `model` in place, as the module docstring says;
    returns the trained model's stage count (the stages now initialised)."""
    check_widening(trained.cfg, model.cfg)
    src = trained.state_dict()
    for name, new in model.state_dict().items():
        if name.startswith("quantizer.") or name not in src:
            continue
        old = src[name]
        if old.ndim == 4:  # conv weight [out, in, kh, kw]
            new[:, old.shape[1]:] = 0
            new[: old.shape[0], : old.shape[1]] = old
        elif old.ndim == 1:  # bias: new outputs start at zero
            new.zero_()
            new[: old.shape[0]] = old
        else:
            raise VQError(f"cannot widen tensor {name} of shape {tuple(old.shape)}")
    d = trained.cfg.latent_dim
    for old_layer, layer in zip(trained.quantizer.layers, model.quantizer.layers):
        layer.codebook.zero_()
        layer.codebook[:, :d] = old_layer.codebook
        layer.initialised.fill_(True)
    return trained.cfg.stages
