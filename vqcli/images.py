"""Reading images from disk into 8-bit RGB arrays, whatever their mode (no torch import)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VQError
from .limits import MAX_PIXELS, check_size

# Pillow logs some refusals (logger.error) before raising: without a handler, logging's last resort
# prints them on stderr beside vq's one-line error. A NullHandler keeps them for applications that
# configure logging and off the terminal otherwise.
logging.getLogger("PIL").addHandler(logging.NullHandler())

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".avif"})
IMAGE_FORMATS = "png, jpg, webp, tiff, bmp, avif"  # IMAGE_SUFFIXES in words, for messages and help
ORIENTATION = 0x0112  # the EXIF tag


@dataclass
class LoadedImage:
    rgb: np.ndarray  # [H, W, 3] uint8
    alpha: np.ndarray | None  # [H, W] uint8, None when the image has no (non-opaque) alpha
    mode: str  # the source's Pillow mode, for information
    notes: tuple[str, ...] = ()  # what reading did that the user should know (colour conversion, frames)


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


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """8 bits per sample. 16-bit data is scaled by 1/257. Pillow's 32-bit modes say nothing of
    their range, so the values decide: float ("F") samples within 0..1 are the float convention
    (x 255), within 0..255 8-bit levels; integer ("I") samples within 0..255 are 8-bit levels,
    within 0..65535 16-bit ones. Anything else (negative, larger, NaN) has no known range: an error."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise VQError(f"{name}: float image holds NaN or infinite samples")
        if lo >= 0 and hi <= 1:
            return np.round(a.astype(np.float64) * 255).astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return np.round(a).astype(np.uint8)
        raise VQError(f"{name}: float samples span {lo:g}..{hi:g}, neither 0..1 nor 0..255; "
                      "convert the image to 8 or 16 bits first")
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    raise VQError(f"{name}: 32-bit integer samples span {lo:g}..{hi:g}, beyond 16 bits; "
                  "convert the image to 8 or 16 bits first")


def decode_image(data: bytes, name: str, max_pixels: int | None = MAX_PIXELS) -> LoadedImage:
    """Decode image bytes; EXIF orientation applied, any mode converted to RGB (+ alpha).

    Hostile input: the size is checked from the header before any pixel is decoded (sides,
    max_pixels; None: no pixel limit), Pillow's warnings (truncated data, corrupt EXIF, its own
    bomb guard, which vq's limit replaces) never reach stderr, and any failure is one VQError.
    """
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and (max_pixels is None or max_pixels > Image.MAX_IMAGE_PIXELS):
        Image.MAX_IMAGE_PIXELS = max_pixels  # vq's own limit (checked in from_pil) replaces Pillow's bomb guard
    with _readable(name):
        with Image.open(io.BytesIO(data)) as im:
            return from_pil(im, name, max_pixels)


def from_pil(im, name: str = "<image>", max_pixels: int | None = MAX_PIXELS) -> LoadedImage:
    """A Pillow image as 8-bit RGB (+ alpha): EXIF orientation applied, any mode converted; its
    size is checked before its pixels are decoded."""
    from PIL import ImageOps

    with _readable(name):
        check_size(im.width, im.height, name, max_pixels)
        with _c_stderr_folded(name) if im.format == "TIFF" else contextlib.nullcontext():
            im.load()  # decoded before exif_transpose, so that libtiff's messages are caught here
        if im.getexif().get(ORIENTATION, 1) != 1:  # exif_transpose copies even when there is nothing to do
            im = ImageOps.exif_transpose(im)
        mode = im.mode
        notes: list[str] = []
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"animated ({im.n_frames} frames): coded the first frame only")
        if im.info.get("icc_profile"):
            im, note = _to_srgb(im, im.info["icc_profile"])
            notes += [note] if note else []
        alpha = None
        if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            gray = _to_uint8(np.asarray(im), name)
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
        else:
            if (mode == "P" and "transparency" in im.info) or mode in ("LA", "PA", "La"):
                im = im.convert("RGBA")
            if im.mode == "RGBA":
                a = np.asarray(im.getchannel("A"))
                alpha = None if a.min() == 255 else a.copy()
                im = im.convert("RGB")
            rgb = _rgb_pixels(im)
    return LoadedImage(np.ascontiguousarray(rgb), alpha, mode, tuple(notes))


def _to_srgb(im, icc: bytes):
    """(image, note): a colour image with an embedded profile other than sRGB converted to sRGB
    by LittleCMS (Pillow's ImageCms), as a colour-managed viewer shows it; the model codes sRGB
    and decoded files are sRGB. Grey images keep their values; a profile LittleCMS cannot read
    is ignored, with a note."""
    from PIL import ImageCms

    if im.mode not in ("RGB", "RGBA", "CMYK", "P", "PA"):
        return im, None
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").strip() or "an unnamed profile"
        if desc.lower().startswith("srgb"):
            return im, None
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA")
        alpha = im.getchannel("A") if im.mode == "RGBA" else None
        out = ImageCms.profileToProfile(im.convert("RGB") if alpha is not None else im, src,
                                        ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        return im, f"colour profile unreadable ({(str(e).splitlines() or ['?'])[0]}): taken as sRGB"
    if alpha is not None:
        out.putalpha(alpha)
    return out, f"colours converted from {desc} to sRGB"


def _describe(e: BaseException, caught: list[warnings.WarningMessage]) -> str:
    """The first line of an exception, with Pillow's first warning (often the real cause)."""
    from PIL import UnidentifiedImageError

    what = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, UnidentifiedImageError):  # its message names the BytesIO, not the file
        what = "unknown format"
    elif isinstance(e, MemoryError):
        what = "out of memory decoding it"
    if caught:
        what += f"; {(str(caught[0].message).strip().splitlines() or [''])[0]}"
    return what


@contextlib.contextmanager
def _c_stderr_folded(name: str) -> Iterator[None]:
    """Keep what C code prints on file descriptor 2 (libtiff reports decoding errors there) off
    the terminal; when the body fails, its first line joins the one-line error."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        except Exception as e:
            os.dup2(saved, 2)
            f.seek(0)
            said = f.read(500).decode("utf-8", "replace").strip().splitlines()
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise VQError(f"{name}: not a readable image ({first}" + (f"; {said[0]}" if said else "") + ")") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _rgb_pixels(im, band: int = 256) -> np.ndarray:
    """uint8 [H, W, 3] of any pointwise-convertible mode, filled band by band: np.asarray(im)
    goes through im.tobytes(), which holds the whole image twice more (chunks, then their join),
    and a whole-image convert("RGB") would add a third copy: at 100 MP each is 300-400 MB."""
    w, h = im.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    for y in range(0, h, band):
        part = im.crop((0, y, w, min(h, y + band)))
        out[y:y + band] = np.asarray(part if part.mode == "RGB" else part.convert("RGB"))
    return out


@contextlib.contextmanager
def _readable(name: str) -> Iterator[None]:
    """Pillow's many ways of failing on a bad image, as one VQError naming the file; its warnings
    (truncated data, corrupt EXIF, bomb sizes) are kept off stderr and folded into that error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except VQError:
            raise
        except Exception as e:  # Pillow's parsers raise anything on hostile bytes: all mean a bad file
            raise VQError(f"{name}: not a readable image ({_describe(e, caught)})") from None


def load_image(path: Path | str, max_pixels: int | None = MAX_PIXELS) -> LoadedImage:
    """Read and decode an image file ('-' is not handled here: pass bytes to decode_image)."""
    from .fileio import read_file

    return decode_image(read_file(path), str(path), max_pixels)
