"""Index statistics of a model over a set of images: what the entropy prior and `vq stats` use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .data import pad_to_multiple, to_tensor
from .images import load_image


@torch.no_grad()
def collect_index_stats(model: torch.nn.Module, files: Iterable[Path], device: torch.device | str = "cpu",
                        on_image: Callable[[Path], None] | None = None) -> dict[str, torch.Tensor]:
    """Per-stage index histograms [S, K] (int64) over whole images, the mean squared
    distance of each stage's input vector to its code [S] (float32), and the context counts
    [S, K, K] (int32) of the codec's context entropy model (see vqcli.entropy.context_counts)."""
    import numpy as np

    from .entropy import CONTEXT_STAT, context_counts

    cfg = model.cfg
    hist = torch.zeros(cfg.stages, cfg.codebook_size, dtype=torch.int64)
    dist_sum = torch.zeros(cfg.stages, dtype=torch.float64)
    ctx = np.zeros((cfg.stages, cfg.codebook_size, cfg.codebook_size), dtype=np.int64)
    n_vec = 0
    for path in files:
        x, _ = pad_to_multiple(to_tensor(load_image(path).rgb).to(device), model.factor)
        z = model._latent(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
        residual = flat
        grid = []
        for s, layer in enumerate(model.quantizer.layers):
            idx = layer.encode(residual)
            q = layer.lookup(idx)
            dist_sum[s] += (residual - q).pow(2).sum(1).sum().double().cpu()
            residual = residual - q
            hist[s] += torch.bincount(idx.cpu(), minlength=cfg.codebook_size)
            grid.append(idx.cpu().reshape(z.shape[2], z.shape[3]).numpy())
        ctx += context_counts(np.stack(grid), cfg.codebook_size)
        n_vec += flat.shape[0]
        if on_image:
            on_image(path)
    # int32 halves the weights' size; counts are clamped (they only shape probabilities).
    ctx32 = torch.from_numpy(np.minimum(ctx, 2**31 - 1).astype(np.int32))
    return {"histogram": hist, "code_distance": (dist_sum / max(n_vec, 1)).float(), CONTEXT_STAT: ctx32}
