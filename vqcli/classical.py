"""The classical codecs vq is measured against (Pillow's JPEG, WebP and AVIF): their settings,
and coding an image with them (`vq eval`'s ladders, `vq compare`'s budget search)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Classical:
    label: str
    pil_format: str
    qualities: tuple[int, ...]  # the ladder `vq eval` sweeps
    options: Callable[[int], dict[str, Any]]
    quality_range: tuple[int, int] = (0, 100)  # every setting Pillow accepts (`vq compare` searches it)


# Fixed quality ladders, the same for every image so that points can be averaged. They run
# from about 0.1 bpp (the bottom of vq's 1-stage range) to well past its top.
CLASSICAL: dict[str, Classical] = {
    "jpeg": Classical("JPEG 4:2:0", "JPEG", (5, 10, 15, 25, 35, 50, 65, 80, 90),
                      lambda q: {"quality": q, "subsampling": 2, "optimize": True}, (1, 100)),
    "webp": Classical("WebP m6", "WEBP", (0, 5, 10, 20, 35, 50, 65, 80, 90),
                      lambda q: {"quality": q, "method": 6}),
    "avif": Classical("AVIF", "AVIF", (5, 15, 25, 35, 45, 55, 65, 75, 85),
                      lambda q: {"quality": q, "speed": 6, "subsampling": "4:2:0"}),
}


def available(name: str) -> bool:
    """Whether this Pillow can write codec `name` (WebP and AVIF are optional Pillow modules)."""
    from PIL import features

    return name == "jpeg" or (name in CLASSICAL and bool(features.check(name)))


def encode(name: str, image, quality: int) -> bytes:
    """A Pillow image (RGB) as a file of codec `name` (see CLASSICAL) at a quality setting."""
    c = CLASSICAL[name]
    buf = io.BytesIO()
    image.save(buf, c.pil_format, **c.options(quality))
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] of a file written by encode."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as dec:
        return np.asarray(dec.convert("RGB"))
