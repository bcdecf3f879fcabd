"""Reading images from disk into 8-bit RGB arrays, whatever their mode (no torch import)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VQError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".avif"})
IMAGE_FORMATS = "png, jpg, webp, tiff, bmp, avif"  # IMAGE_SUFFIXES in words, for messages and help
MAX_PIXELS = 100_000_000  # a sanity bound well above any photo we expect; Pillow's own bomb check is 89M


@dataclass
class LoadedImage:
    rgb: np.ndarray  # [H, W, 3] uint8
    alpha: np.ndarray | None  # [H, W] uint8, None when the image has no (non-opaque) alpha
    mode: str  # the source's Pillow mode, for information


def find_images(root: Path) -> list[Path]:
    """Image files below root (recursive, sorted for reproducibility)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def images_in(folder: Path | str, limit: int | None = None) -> list[Path]:
    """find_images (the first `limit`), with a one-line error for a missing folder or one without images."""
    if not Path(folder).is_dir():
        raise VQError(f"{folder}: not a directory")
    files = find_images(Path(folder))[:limit]
    if not files:
        raise VQError(f"{folder}: no images found ({IMAGE_FORMATS})")
    return files


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """8 bits per sample: 16-bit data is scaled by 1/257; 32-bit integer or float modes (Pillow's
    "I", "F") are scaled only when their values exceed 8 bits, since they often hold 8-bit data."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16 or a.max(initial=0) > 255:
        return np.clip(np.round(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def decode_image(data: bytes, name: str) -> LoadedImage:
    """Decode image bytes; EXIF orientation applied, any mode converted to RGB (+ alpha)."""
    from PIL import Image

    with _readable(name):
        with Image.open(io.BytesIO(data)) as im:
            return from_pil(im, name)


def from_pil(im, name: str = "<image>") -> LoadedImage:
    """A Pillow image as 8-bit RGB (+ alpha): EXIF orientation applied, any mode converted."""
    from PIL import ImageOps

    with _readable(name):
        if im.width * im.height > MAX_PIXELS:
            raise VQError(f"{name}: image is {im.width}x{im.height}, larger than the {MAX_PIXELS} pixel limit")
        im = ImageOps.exif_transpose(im)
        im.load()
        mode = im.mode
        alpha = None
        if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            gray = _to_uint8(np.asarray(im))
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            if (mode == "P" and "transparency" in im.info) or mode in ("LA", "PA", "La"):
                im = im.convert("RGBA")
            if im.mode == "RGBA":
                a = np.asarray(im.getchannel("A"))
                alpha = None if a.min() == 255 else a.copy()
                im = im.convert("RGB")
            rgb = np.asarray(im.convert("RGB"))
    return LoadedImage(np.ascontiguousarray(rgb), alpha, mode)


@contextlib.contextmanager
def _readable(name: str) -> Iterator[None]:
    """Pillow's many ways of failing on a bad image, as one VQError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except VQError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise VQError(f"{name}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def load_image(path: Path | str) -> LoadedImage:
    """Read and decode an image file ('-' is not handled here: pass bytes to decode_image)."""
    from .fileio import read_file

    return decode_image(read_file(path), str(path))
