"""A model's index counts over a set of images (the `stats.*` tensors of a release): what the entropy
tables and `vq stats` are made of."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .images import load_image
from .model import pad_to_multiple, to_tensor


@torch.no_grad()
def collect_index_counts(model: torch.nn.Module, files: Iterable[Path], device: torch.device | str = "cpu",
                        on_image: Callable[[Path], None] | None = None) -> dict[str, torch.Tensor]:
    """Per-stage index histograms [S, K] (int64) over whole images, the mean squared
    distance of each stage's input vector to its code [S] (float32), and the context counts
    [S, K, K] (int32) of the codec's context and spatial entropy models (vqcli.entropy:
    context_counts, neighbour_counts, default_experts)."""
    import numpy as np

    from .entropy import CONTEXT_STAT, EXPERTS_STAT, LEFT_STAT, UP_STAT, context_counts, default_experts, neighbour_counts

    cfg = model.cfg
    k = cfg.codebook_size
    hist = torch.zeros(cfg.stages, k, dtype=torch.int64)
    dist_sum = torch.zeros(cfg.stages, dtype=torch.float64)
    ctx = np.zeros((cfg.stages, k, k), dtype=np.int64)
    up, left = np.zeros_like(ctx), np.zeros_like(ctx)
    n_vec = 0
    for path in files:
        x, _ = pad_to_multiple(to_tensor(load_image(path).rgb).to(device), model.factor)
        idx, err = model.encode_with_error(x)
        idx = idx[0].cpu()
        hist += torch.stack([torch.bincount(stage.ravel(), minlength=k) for stage in idx])
        dist_sum += err[0].sum((1, 2)).double().cpu()
        ctx += context_counts(idx.numpy(), k)
        u, lf = neighbour_counts(idx.numpy(), k)
        up += u
        left += lf
        n_vec += idx.shape[1] * idx.shape[2]
        if on_image:
            on_image(path)
    def int32(c: np.ndarray) -> torch.Tensor:  # halves the weights' size; clamped (counts only shape probabilities)
        return torch.from_numpy(np.minimum(c, 2**31 - 1).astype(np.int32))

    return {"histogram": hist, "code_distance": (dist_sum / max(n_vec, 1)).float(), CONTEXT_STAT: int32(ctx),
            UP_STAT: int32(up), LEFT_STAT: int32(left), EXPERTS_STAT: torch.from_numpy(default_experts(cfg.stages))}
