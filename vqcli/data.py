"""Training data: random crops with flips from a folder of images, reproducible by step.

Sample k of the stream (k = step * batch + j) is drawn from a generator seeded with
(seed, rank, k), so resuming at a step replays exactly the batches a run would have seen,
whatever the number of loader workers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .errors import VQError
from .images import IMAGE_FORMATS, find_images, load_image


def usable_images(root: Path, min_side: int = 8) -> list[Path]:
    """Image files below root that decode; unreadable ones are skipped with a warning."""
    files = find_images(root)
    good = []
    for p in files:
        try:
            from PIL import Image

            with Image.open(p) as im:
                im.load()  # a full decode: verify() passes truncated files that fail in a loader worker
            if min(im.size) < min_side:
                raise VQError(f"{p}: image is only {im.size[0]}x{im.size[1]}")
            good.append(p)
        except Exception as e:
            warnings.warn(f"skipping {p}: {e}", stacklevel=2)
    if not good:
        raise VQError(f"{root}: no readable images found ({IMAGE_FORMATS})")
    return good


def random_crop(rgb: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """A crop x crop patch with random flip; images smaller than the crop are upscaled first."""
    h, w = rgb.shape[:2]
    if min(h, w) < crop:
        from PIL import Image

        s = crop / min(h, w)
        size = (max(crop, round(w * s)), max(crop, round(h * s)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))
        h, w = rgb.shape[:2]
    y = int(rng.integers(0, h - crop + 1))
    x = int(rng.integers(0, w - crop + 1))
    patch = rgb[y:y + crop, x:x + crop]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch)


class CropDataset(Dataset):
    """Item k is a random crop from a random image, fixed by (seed, rank, k).

    cache: decode every image once, up front, and keep it in memory as uint8, so that a crop costs
    a slice instead of a JPEG decode (on a 2-core machine the decode otherwise takes a core from
    the model). Loaded before the loader forks, so workers share the pages.
    """

    def __init__(self, files: list[Path], crop: int, seed: int = 0, rank: int = 0, cache: bool = False) -> None:
        self.files, self.crop, self.seed, self.rank = files, crop, seed, rank
        self._cache = [load_image(f).rgb for f in files] if cache else None

    def __len__(self) -> int:  # an endless stream; the sampler decides which items
        return 2**62

    def _image(self, i: int) -> np.ndarray:
        return self._cache[i] if self._cache is not None else load_image(self.files[i]).rgb

    def __getitem__(self, k: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.rank, k])
        rgb = self._image(int(rng.integers(len(self.files))))
        patch = random_crop(rgb, self.crop, rng)
        return torch.from_numpy(patch).permute(2, 0, 1)  # uint8; scaled on the training device


class StepSampler(Sampler[list[int]]):
    """Batches of item numbers from `start_step` to `steps` (exclusive)."""

    def __init__(self, batch_size: int, start_step: int, steps: int) -> None:
        self.batch_size, self.start, self.steps = batch_size, start_step, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield list(range(step * self.batch_size, (step + 1) * self.batch_size))
