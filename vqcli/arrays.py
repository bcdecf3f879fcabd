"""numpy arrays from torch tensors or array-likes, for the modules that must not import torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device, detached) or anything np.asarray takes, as a numpy array."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
