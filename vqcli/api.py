"""The top-level Python API: `vqcli.compress`, `vqcli.decompress`, `vqcli.info` (docs/API.md).

Images go in as a Pillow image, a uint8 array ([H, W] grey, [H, W, 3] RGB, [H, W, 4] RGBA) or a
path, and come out as Pillow images; .vqz files are bytes or paths. The model is loaded once per
(weights file, device) and cached; `weights` may also be an already loaded vqcli.weights.Weights.
The device defaults to the CLI's: "auto" (CUDA when available).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Union

from .errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .images import LoadedImage
    from .weights import Weights

ImageLike = Union["Image.Image", "np.ndarray", str, os.PathLike]
WeightsLike = Union[str, os.PathLike, "Weights", None]
DataLike = Union[bytes, bytearray, memoryview, str, os.PathLike]
ARRAY_MODES = {2: "L", 3: "RGB", 4: "RGBA"}  # channels ([H, W] is grey) -> Pillow mode


def load_model(weights: WeightsLike = None, device: str | None = None) -> Weights:
    """The model to use: a loaded Weights as given, else the file or shipped model name (default:
    the shipped default; weightspath.resolve_weights) loaded onto `device` (default "auto"),
    cached per resolved path and device."""
    from .weights import Weights
    from .weightspath import resolve_weights

    if isinstance(weights, Weights):
        return weights
    path = resolve_weights(weights)
    return _cached_model(str(path.resolve()), device or "auto")


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, device: str) -> Weights:
    from .weights import load_weights

    return load_weights(path, device)


def model_for(model_id: str, weights: WeightsLike = None, device: str | None = None, name: str = "<input>") -> Weights:
    """The model that decodes a file made by `model_id`: `weights` when given, else the weights of
    that id (vqcli.weights.find_weights: $VQ_WEIGHTS_PATH, then the shipped ones)."""
    from .weightspath import find_weights

    return load_model(weights if weights is not None else find_weights(model_id, name), device)


def as_image(image: ImageLike, name: str | None = None) -> LoadedImage:
    """Any accepted image input as 8-bit RGB (+ alpha), converted as the CLI converts files."""
    import numpy as np
    from PIL import Image

    from .images import from_pil, load_image

    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, np.ndarray):
        ndim_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))
        if image.dtype != np.uint8 or not ndim_ok:
            raise UsageError(f"image: expected a uint8 array [H, W], [H, W, 3] or [H, W, 4], got {image.dtype} "
                             f"{list(image.shape)}", params=("image",))
        mode = ARRAY_MODES[2 if image.ndim == 2 else image.shape[2]]
        return from_pil(Image.fromarray(np.ascontiguousarray(image), mode), name or "<array>")
    if isinstance(image, Image.Image):
        return from_pil(image, name or getattr(image, "filename", None) or "<image>")
    raise UsageError(f"image: expected a PIL image, a uint8 array or a path, got {type(image).__name__}",
                     params=("image",))


def _read(data: DataLike) -> tuple[bytes, str]:
    """(bytes, name for messages) of .vqz data given as bytes or a path."""
    from .fileio import read_file

    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), "<bytes>"
    if isinstance(data, (str, os.PathLike)):
        return read_file(data), str(data)
    raise UsageError(f"data: expected bytes or a path, got {type(data).__name__}", params=("data",))


def compress(image: ImageLike, *, quality: float | None = None, bpp: float | None = None,
             psnr: float | None = None, stages: int | None = None, weights: WeightsLike = None,
             device: str | None = None, effort: int | None = None, best_effort: bool = False) -> bytes:
    """Compress an image to .vqz bytes. At most one of `quality` (0-100: each block keeps the
    stages worth their bits), `bpp` (the highest quality whose file fits), `psnr` (the lowest
    quality reaching it, dB) and `stages` (the first N RVQ stages everywhere: a plain token
    grid) sets the rate; default: the weights' default quality. `effort` 0-2 (default 1): how hard
    the encoder searches for codes; more is slower and gives smaller files at equal quality.
    A `bpp` or `psnr` that no quality meets is a VQError, unless `best_effort` (the nearest file)."""
    from . import codec

    name = str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
    loaded = as_image(image)
    return codec.compress(load_model(weights, device), loaded, stages, bpp, psnr, name=name, quality=quality,
                          effort=effort, best_effort=best_effort).data


def decompress(data: DataLike, *, stages: int | None = None, weights: WeightsLike = None,
               device: str | None = None) -> Image.Image:
    """Decode .vqz bytes or a .vqz file to a Pillow image (its first `stages` stages; default all
    it holds), in the file's colour mode (RGB, RGBA, L or LA)."""
    from . import codec
    from . import format as vqz

    raw, name = _read(data)
    header = vqz.read_header(raw, name)  # a bad file fails before the model loads
    return codec.decompress(model_for(header.model_id, weights, device, name), raw, stages, name).to_pil()


def info(data: DataLike) -> dict[str, Any]:
    """A .vqz file's header, chunk sizes and bits per stage, as a dict (no model, no torch)."""
    from . import format as vqz

    raw, name = _read(data)
    return vqz.info(raw, name)
