"""Images <-> .vqz bytes: the model turns pixels into RVQ indices, vqcli.entropy codes them,
vqcli.format frames them.

Colour: the model codes RGB. Grey inputs are coded as RGB and written back as grey (mode L);
an alpha channel (RGBA, LA, palette transparency) is kept losslessly in a zlib chunk, since a
learned RGB model has no business approximating a mask. 16-bit inputs are reduced to 8 bits
and EXIF orientation is applied on reading (vqcli.images).

Rate: a file holds a prefix of the S stages. Default: the weights' default_stages (measured for
the shipped model against JPEG; ceil(0.6 * S) for weights that name none); --stages, --bpp or
--psnr choose otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import format as vqz
from . import metrics, tiling
from .entropy import EntropyModel, build_model
from .errors import UsageError, VQError
from .images import LoadedImage
from .limits import MAX_PIXELS, check_size
from .stats import entropy_bits
from .weights import Weights

GREY_SOURCES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_MODELS: dict[tuple[str, str], EntropyModel] = {}


def entropy_model(weights: Weights, kind: str = "auto") -> EntropyModel:
    """The weights' entropy model, cached per model id (tables take a moment to build)."""
    key = (weights.model_id, kind)
    if key not in _MODELS:
        _MODELS[key] = build_model(weights.stats, kind)
    return _MODELS[key]


# -- indices <-> pixels -------------------------------------------------------------------------
def encode_indices(weights: Weights, rgb: np.ndarray, tile: int | None = None) -> torch.Tensor:
    """uint8 [H, W, 3] -> int64 [S, h, w], replicate-padded to the model's factor, all stages.

    Tiled (vqcli.tiling; tile: core side in latent cells, default per device): the same indices
    as whole-image encoding except at float near-ties."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    return tiling.encode(weights.model, rgb, tile)


def decode_indices(weights: Weights, indices: torch.Tensor, width: int, height: int,
                   tile: int | None = None) -> np.ndarray:
    """int64 [s, h, w] (any prefix of the stages) -> uint8 [height, width, 3], padding cropped.

    Tiled (vqcli.tiling): within one level of whole-image decoding."""
    f = weights.model.factor
    if indices.ndim != 3 or indices.shape[1] * f < height or indices.shape[2] * f < width:
        raise ValueError(f"indices {tuple(indices.shape)} do not cover {width}x{height}")
    return tiling.decode(weights.model, torch.as_tensor(indices), width, height, tile)


# -- indices <-> bytes --------------------------------------------------------------------------
def _header(weights: Weights, width: int, height: int, stages: int, mode: str, em: EntropyModel) -> vqz.Header:
    cfg = weights.config
    return vqz.Header(width, height, mode, weights.model_id, cfg.downsample, cfg.stages, stages,
                      cfg.codebook_size, em.kind)


def stage_payloads(em: EntropyModel, indices: np.ndarray, ideal: list[float] | None = None) -> list[bytes]:
    """Coded chunk payload of every stage in indices [s, h, w] (each depends only on earlier stages);
    `ideal` receives each stage's ideal size in bits.

    indices (C-contiguous int64) may change in place at the bottom-right positions of a nearly
    uniform stage, so that every payload meets the readers' size bound (EntropyModel.encode_stages)."""
    return em.encode_stages(indices, ideal)


def frame(weights: Weights, payloads: list[bytes], width: int, height: int, em: EntropyModel, mode: str = "RGB",
          alpha_payload: bytes | None = None) -> bytes:
    """A complete .vqz file from the coded payloads of a prefix of the stages (see stage_payloads)."""
    return vqz.write(_header(weights, width, height, len(payloads), mode, em), payloads, alpha_payload)


def pack(weights: Weights, indices: torch.Tensor, width: int, height: int, alpha: np.ndarray | None = None,
         mode: str | None = None, entropy: str = "auto") -> bytes:
    """Indices [s, h, w] (any prefix s <= S) -> a complete .vqz file.

    mode: the colour mode to record (default RGB, or RGBA with alpha); entropy: "auto" (context
    model when the weights carry its statistics), "static" or "context".
    """
    idx = torch.as_tensor(indices).cpu().numpy().astype(np.int64)  # a copy: stage_payloads may adjust it
    em = entropy_model(weights, entropy)
    mode = mode or ("RGBA" if alpha is not None else "RGB")
    _check_grid(_header(weights, width, height, idx.shape[0], mode, em), idx, weights)
    return frame(weights, stage_payloads(em, idx), width, height, em, mode,
                 vqz.pack_alpha(alpha) if alpha is not None else None)


def _check_grid(header: vqz.Header, idx: np.ndarray, weights: Weights) -> None:
    if idx.ndim != 3 or tuple(idx.shape[1:]) != header.grid or not 1 <= idx.shape[0] <= weights.config.stages:
        raise ValueError(f"indices {idx.shape} do not match a {header.grid} grid "
                         f"with 1..{weights.config.stages} stages")
    if idx.min(initial=0) < 0 or idx.max(initial=0) >= weights.config.codebook_size:
        raise ValueError("indices out of the codebook range")


# -- compress -----------------------------------------------------------------------------------
@dataclass
class StageCoding:
    """How one stage of one image was coded (vqcli.stats.StageStats is a codebook's usage)."""

    stage: int  # 1-based
    bytes: int  # chunk payload
    bits_per_index: float  # coded
    entropy: float  # empirical entropy of this image's indices, bits/index
    cross_entropy: float  # ideal bits/index under the entropy model's tables
    codes_used: int

    @property
    def bits(self) -> int:
        return 8 * self.bytes


@dataclass
class CompressResult:
    data: bytes
    width: int
    height: int
    mode: str
    stages: int  # stages stored
    model_stages: int
    entropy_model: str
    stage_coding: list[StageCoding]  # one per stored stage
    rate: str  # how the number of stages was chosen
    note: str | None = None  # e.g. a rate target that could not be met
    psnr_by_stage: dict[int, float] = field(default_factory=dict)  # filled by --psnr

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.width * self.height)

    def to_dict(self) -> dict:
        return {
            "bytes": len(self.data), "width": self.width, "height": self.height, "mode": self.mode,
            "bpp": self.bpp, "stages": self.stages, "model_stages": self.model_stages,
            "entropy_model": self.entropy_model, "rate": self.rate, "note": self.note,
            "stage_stats": [{**s.__dict__, "bits": s.bits} for s in self.stage_coding],
            **({"psnr_by_stage": self.psnr_by_stage} if self.psnr_by_stage else {}),
        }


def colour_mode(image: LoadedImage) -> str:
    grey = image.mode in GREY_SOURCES
    if image.alpha is not None:
        return "LA" if grey else "RGBA"
    return "L" if grey else "RGB"


RATE_PARAMS = ("stages", "bpp", "psnr")


def check_rate(stages: int | None, bpp: float | None, psnr: float | None, total: int | None = None) -> None:
    """The rate parameters: at most one of them, a positive bpp, stages within 1..total (once known)."""
    if sum(v is not None for v in (stages, bpp, psnr)) > 1:
        raise UsageError("choose at most one of stages, bpp and psnr", params=RATE_PARAMS)
    if bpp is not None and not bpp > 0:
        raise UsageError(f"bpp {bpp:g}: must be positive", params=("bpp",))
    if stages is not None and not (1 <= stages and (total is None or stages <= total)):
        raise UsageError(f"stages {stages}: the model has stages 1 to {total}" if total is not None
                         else f"stages {stages}: must be at least 1", params=("stages",))


def compress(weights: Weights, image: LoadedImage, stages: int | None = None, bpp: float | None = None,
             psnr: float | None = None, entropy: str = "auto", name: str = "<input>") -> CompressResult:
    """Encode an image; at most one of stages / bpp / psnr picks the rate (default: weights.default_stages).
    name: the input's name for error messages."""
    total = weights.config.stages
    check_rate(stages, bpp, psnr, total)
    height, width = image.rgb.shape[:2]
    mode = colour_mode(image)
    em = entropy_model(weights, entropy)
    header = _header(weights, width, height, total, mode, em)
    vqz.check_header(header, name)
    idx = np.ascontiguousarray(encode_indices(weights, image.rgb).numpy())
    alpha = vqz.pack_alpha(image.alpha) if image.alpha is not None else None
    note, by_stage, ideal = None, {}, []
    if bpp is not None:  # the file size of every prefix decides: code every stage
        payloads = stage_payloads(em, idx, ideal)
        fixed = vqz.HEADER_SIZE + (vqz.CHUNK_HEAD_SIZE + len(alpha) if alpha is not None else 0)
        sizes = np.cumsum([vqz.CHUNK_HEAD_SIZE + len(p) for p in payloads]) + fixed
        fits = [n for n in range(1, total + 1) if 8 * sizes[n - 1] / (width * height) <= bpp]
        n = max(fits) if fits else 1
        rate = f"--bpp {bpp:g}"
        if not fits:
            note = f"even 1 stage needs {8 * sizes[0] / (width * height):.3f} bpp > {bpp:g}; used 1 stage"
    elif psnr is not None:
        rate = f"--psnr {psnr:g}"
        n = total
        for k in range(1, total + 1):
            by_stage[k] = metrics.psnr(image.rgb, decode_indices(weights, torch.from_numpy(idx[:k]), width, height))
            if by_stage[k] >= psnr:
                n = k
                break
        else:
            note = f"no stage count reaches {psnr:g} dB (best {max(by_stage.values()):.2f} dB); used all {total}"
    else:
        n = stages if stages is not None else weights.default_stages
        rate = f"--stages {n}" if stages is not None else "default"
    if bpp is None:  # only the stages kept are coded (each stage's code depends on earlier ones only)
        payloads = stage_payloads(em, idx[:n], ideal)
    data = frame(weights, payloads[:n], width, height, em, mode, alpha)
    gh, gw = header.grid
    stats = []
    for s in range(n):
        stats.append(StageCoding(s + 1, len(payloads[s]), 8 * len(payloads[s]) / (gh * gw),
                                entropy_bits(np.bincount(idx[s].ravel())),
                                ideal[s] / (gh * gw), int(np.unique(idx[s]).size)))
    return CompressResult(data, width, height, mode, n, total, em.kind, stats, rate, note, by_stage)


# -- decompress ---------------------------------------------------------------------------------
@dataclass
class DecodedImage:
    rgb: np.ndarray  # uint8 [H, W, 3]
    alpha: np.ndarray | None  # uint8 [H, W]
    header: vqz.Header
    stages: int  # stages decoded
    indices: np.ndarray  # int64 [stages, h, w]
    truncated: bool = False  # the file held fewer stages than its header announced

    def to_pil(self):
        """A Pillow image in the file's colour mode (grey written as L, alpha attached)."""
        from PIL import Image

        im = Image.fromarray(self.rgb, "RGB")
        if self.header.mode in ("L", "LA"):
            im = im.convert("L")
        if self.alpha is not None:
            im.putalpha(Image.fromarray(self.alpha, "L"))
        return im


def unpack(weights: Weights, data: bytes, stages: int | None = None, name: str = "<input>",
           max_pixels: int | None = MAX_PIXELS) -> tuple[vqz.Container, np.ndarray]:
    """Parse and entropy-decode a file -> (container, int64 indices [n, h, w]).

    Work is bounded by the file: the pixel count by max_pixels (None: no limit), every stage
    payload by the fewest bytes its grid can code to, checked before anything is allocated,
    and every payload must be consumed exactly."""
    c = vqz.read(data, name)
    h = c.header
    check_size(h.width, h.height, name, max_pixels)
    if h.model_id != weights.model_id:
        where = f" ({weights.path})" if weights.path else ""
        raise VQError(f"{name}: made with model {h.model_id}, but the weights{where} are model {weights.model_id}")
    cfg = weights.config
    if (h.factor, h.model_stages, h.codebook) != (cfg.downsample, cfg.stages, cfg.codebook_size):
        raise VQError(f"{name}: header does not match model {weights.model_id} (factor, stages, codebook)")
    n = c.stages_available
    if stages is not None:
        if not 1 <= stages <= n:
            raise VQError(f"{name}: stages {stages}, but the file holds {n} stage{'s' * (n != 1)}",
                          params=("stages",))
        n = stages
    try:
        em = entropy_model(weights, h.entropy)
    except VQError as e:
        raise VQError(f"{name}: {e}") from None
    grid = h.grid
    for s in range(n):
        em.check_payload(s, len(c.stage_chunks[s]), grid[0] * grid[1], name)
    out = np.empty((n, *grid), dtype=np.int64)
    for s in range(n):
        out[s] = em.decode_stage(s, c.stage_chunks[s], grid, out[s - 1] if s else None, name)
    return c, out


def decompress(weights: Weights, data: bytes, stages: int | None = None, name: str = "<input>",
               max_pixels: int | None = MAX_PIXELS) -> DecodedImage:
    """Decode a .vqz file (its first `stages` stages; default all it holds), refusing images of
    more than max_pixels pixels (None: no limit)."""
    c, idx = unpack(weights, data, stages, name, max_pixels)
    h = c.header
    alpha = vqz.unpack_alpha(c.alpha, h, name) if c.alpha is not None else None
    rgb = decode_indices(weights, torch.from_numpy(idx), h.width, h.height)
    return DecodedImage(rgb, alpha, h, idx.shape[0], idx, c.truncated)


# -- quality ------------------------------------------------------------------------------------
def quality(ref: np.ndarray, img: np.ndarray) -> dict[str, float | None]:
    """PSNR, and MS-SSIM where the short side allows its 5 scales (>= 161 px), else SSIM."""
    m, multi = metrics.ms_ssim(ref, img)
    return {"psnr": metrics.psnr(ref, img), "ms_ssim": m if multi else None, "ssim": None if multi else m}
