"""Images <-> .vqz bytes: the model turns pixels into RVQ indices, vqcli.entropy codes them,
vqcli.format frames them.

Colour: the model codes RGB. Grey inputs are coded as RGB and written back as grey (mode L);
an alpha channel (RGBA, LA, palette transparency) is kept losslessly in a zlib chunk, since a
learned RGB model has no business approximating a mask. 16-bit inputs are reduced to 8 bits
and EXIF orientation is applied on reading (vqcli.images). Flat cells (vqcli.flatcells: latent
cells of one colour) are painted exactly, and inside a flat region they hold no indices.

Rate: by default every block of latent cells keeps its own prefix of the S stages, chosen for
rate and distortion at a quality (vqcli.stagemap; a format-2 file); --bpp and --psnr search the
quality. --stages N keeps the first N stages everywhere (a format-1 file, a plain grid of tokens).
Above rate.ENHANCE_FROM, weights that have an enhancement layer (vqcli.enhance) code a base at a
middle quality and the layer over its pixels (a format-4 file), which lifts the image past the
base autoencoder's ceiling.

Codes: the stage map is chosen from the greedy codes (the nearest code, stage by stage); then,
at an effort above 0, each position's codes are searched again to the depth it keeps (a beam
search that also prices bits, rate.EFFORTS). Only the encoder searches: the file format and the
decoder are the same at every effort.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from . import enhancecoding, flatcells, metrics, stagemap, tiling
from . import format as vqz
from .enhancecoding import EnhanceWeights
from .entropy import EntropyModel, build_model
from .errors import UsageError, VQError
from .flatcells import FlatCells
from .format import LEVEL_ONE
from .images import LoadedImage
from .limits import MAX_PIXELS, check_size
from .rate import (
    DEFAULT_EFFORT,
    DEFAULT_QUALITY,
    EFFORTS,
    ENHANCE_FROM,
    ENHANCED_DEFAULT_QUALITY,
    check_effort,
    check_rate,
    enhanced_rate,
)
from .weights import Weights

GREY_SOURCES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_MODELS: dict[tuple[str, str], EntropyModel] = {}
SEARCH_ROWS = 1 << 16  # latent positions per slice of the encoder's search


def enhancement_for(weights: Weights) -> EnhanceWeights | None:
    """The enhancement layer trained over these weights, if one is on the weights search path."""
    path = enhancecoding.find_enhancement(weights.model_id)
    return None if path is None else enhancecoding.cached_enhancement(path, next(weights.model.parameters()).device)


def default_quality(weights: Weights, enhance: bool = True) -> float:
    """The quality of a compress without a rate: the weights' own (a release's metadata), else
    ENHANCED_DEFAULT_QUALITY where a layer enhances them, else DEFAULT_QUALITY."""
    if weights.named_default is not None:
        return weights.named_default
    return ENHANCED_DEFAULT_QUALITY if enhance and enhancement_for(weights) is not None else DEFAULT_QUALITY


def entropy_model(weights: Weights, kind: str = "auto") -> EntropyModel:
    """The weights' entropy model, cached per model id (tables take a moment to build)."""
    key = (weights.model_id, kind)
    if key not in _MODELS:
        _MODELS[key] = build_model(weights.stats, kind)
    return _MODELS[key]


# -- indices <-> pixels -------------------------------------------------------------------------
def encode_indices(weights: Weights, rgb: np.ndarray, tile: int | None = None, errors: bool = False):
    """uint8 [H, W, 3] -> int64 numpy [S, h, w], replicate-padded to the model's factor, all stages;
    with errors, also the squared latent residual [S, h, w] after each stage (the stage map's D).
    Index grids are numpy at this module's boundary; torch stays inside the network passes.

    Tiled (vqcli.tiling; tile: core side in latent cells, default per device): the same indices
    as whole-image encoding except at float near-ties."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    enc = tiling.encode(weights.model, rgb, tile, errors=errors)
    return (enc.indices.numpy(), enc.errors.numpy()) if errors else enc.indices.numpy()


def decode_indices(weights: Weights, indices: np.ndarray, width: int, height: int,
                   tile: int | None = None, flat: FlatCells | None = None) -> np.ndarray:
    """int64 [s, h, w] (any prefix of the stages) -> uint8 [height, width, 3], padding cropped;
    flat cells (vqcli.flatcells) painted their colour, the decoder seeing at the uncoded ones the
    latent of a field of their colour.

    Tiled (vqcli.tiling): within one level of whole-image decoding."""
    f = weights.model.factor
    if indices.ndim != 3 or indices.shape[1] * f < height or indices.shape[2] * f < width:
        raise ValueError(f"indices {tuple(indices.shape)} do not cover {width}x{height}")
    fill = None
    if flat is not None and flat.count:
        if flat.mask.all():  # nothing for the network to do
            rgb = np.empty((height, width, 3), dtype=np.uint8)
            flat.paint(rgb, f)
            return rgb
        colours, ids = flat.palette()
        fill = torch.from_numpy(ids), weights.model.flat_latent(torch.from_numpy(colours))
    rgb = tiling.decode(weights.model, torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64)), width,
                       height, tile, fill=fill)
    if fill is not None:
        flat.paint(rgb, f)
    return rgb


# -- indices <-> bytes --------------------------------------------------------------------------
def _header(weights: Weights, width: int, height: int, stages: int, mode: str, em: EntropyModel) -> vqz.Header:
    cfg = weights.config
    return vqz.Header(width, height, mode, weights.model_id, cfg.downsample, cfg.stages, stages,
                      cfg.codebook_size, em.kind)


@dataclass
class Coded:
    """One file: its bytes, the indices it codes [n, h, w] (-1: absent), per-stage payloads and
    ideal bits, the stage map's payload."""

    data: bytes
    indices: np.ndarray
    payloads: list[bytes]
    ideal: list[float]
    stage_map: bytes | None
    flat: bytes | None  # the flat-cell chunk's payload (format 3)
    enhancement: Enhanced | None = None  # the enhancement layer's part (format 4)


@dataclass
class LayerSymbols:
    """An enhancement layer's part of a file as coded: the layer's model id, its level (fixed
    point, format.LEVEL_ONE) and its symbols int8 [C, gh, gw] (0 inside flat cells)."""

    model_id: str
    level: int
    symbols: np.ndarray


def _layer_payload(layer: EnhanceWeights, ls: LayerSymbols, flat_mask: np.ndarray | None) -> tuple[bytes, float, int]:
    """(chunk payload, ideal bits, symbols coded) of a layer's symbols."""
    keep = enhancecoding.coded_cells(flat_mask, ls.symbols.shape[1:])
    stream, bits = enhancecoding.encode_symbols(layer, ls.symbols, enhancecoding.table_level(ls.level), keep)
    n = int(keep.sum()) * layer.config.channels
    return vqz.pack_enhancement(layer.model_id, ls.level, stream, layer.min_stream_bytes(n)), bits, n


@dataclass
class Enhanced:
    """The enhancement part of a file: the layer, its symbols, the base pixels they refine, and
    what they cost."""

    layer: EnhanceWeights
    symbols: LayerSymbols
    base_rgb: np.ndarray
    payload: bytes
    ideal_bits: float
    coded: int  # symbols coded (none inside flat cells)


def _stage_counts(idx: np.ndarray, flat: np.ndarray | None, block: int) -> np.ndarray | None:
    """Per-block stage counts [hb, wb] that indices [s, h, w] (-1: absent) code around the
    uncoded flat cells (bool [h, w] or None), or None for a plain grid of tokens (all stages
    everywhere)."""
    per_position = (idx >= 0).sum(0)
    if flat is None and per_position.min() == idx.shape[0]:
        return None
    counts = np.maximum(stagemap.block_max(per_position, block), 1)  # a block of uncoded cells keeps 1
    kept = stagemap.expand(counts, per_position.shape, block) * (1 if flat is None else ~flat)
    if not np.array_equal(stagemap.apply(idx, kept), idx):
        raise ValueError(f"absent indices do not form a stage map of {block}x{block} blocks around the "
                         f"uncoded flat cells")
    return counts


def encode_file(weights: Weights, em: EntropyModel, indices: np.ndarray, width: int, height: int,
                mode: str = "RGB", alpha: bytes | None = None, flat: FlatCells | None = None,
                block: int = stagemap.BLOCK, enhancement: bytes | None = None, same: Coded | None = None) -> Coded:
    """A complete .vqz file from indices [s, h, w] (-1 where a stage map drops a stage, and at
    every stage of an uncoded flat cell) and the zlib alpha payload: format 1 for a plain grid of
    tokens, 2 with a stage map, 3 with flat cells or a stage padded to the readers' bound, 4 with an
    enhancement payload. `same`, a file of these very indices, lends its coded stages."""
    flat = flat if flat is not None and flat.count else None
    counts = _stage_counts(indices, None if flat is None else flat.uncoded, block)
    if counts is not None:
        indices = indices[:int(counts.max())]
    ideal: list[float] = [] if same is None else same.ideal
    payloads = em.encode_stages(indices, ideal) if same is None else same.payloads
    need = [em.min_payload_bytes(s, int((indices[s] >= 0).sum())) for s in range(len(payloads))]
    # a padded stage or an enhancement needs format 3's layout: a stage map and a flat-cell chunk
    layout3 = any(len(p) < n for p, n in zip(payloads, need)) or enhancement is not None
    if layout3 and counts is None:
        counts = np.full(stagemap.block_max(indices[0], block).shape, indices.shape[0])
    stage_map = None if counts is None else stagemap.encode(counts, block)
    flat_payload = None if flat is None and not layout3 else \
        flatcells.encode(flat if flat is not None else flatcells.none(indices.shape[1:]))
    data = vqz.write(_header(weights, width, height, len(payloads), mode, em), payloads, alpha, stage_map,
                     flat_payload, need, enhancement)
    return Coded(data, indices, payloads, ideal, stage_map, flat_payload)


def pack(weights: Weights, indices: np.ndarray, width: int, height: int, alpha: np.ndarray | None = None,
         mode: str | None = None, entropy: str = "auto", block: int = stagemap.BLOCK,
         flat: FlatCells | None = None, enhancement: LayerSymbols | None = None) -> bytes:
    """Indices [s, h, w] (any prefix s <= S) -> a complete .vqz file.

    Indices with -1 (absent: what decompress returns for a file with a stage map) are coded with
    the stage map they imply, in blocks of `block` latent cells; with flat cells (what decompress
    returns as DecodedImage.flat), the uncoded ones hold -1 at every stage. mode: the colour mode
    to record (default RGB, or RGBA with alpha); entropy: "auto" (the strongest model the weights
    carry), "static", "context" or "spatial"; enhancement: an enhancement layer's symbols (what
    decompress returns as DecodedImage.enhancement; the layer is found by id), a format-4 file.
    """
    idx = np.asarray(indices, dtype=np.int64)  # the encoder never changes indices: no copy needed
    em = entropy_model(weights, entropy)
    mode = mode or ("RGBA" if alpha is not None else "RGB")
    header = _header(weights, width, height, idx.shape[0], mode, em)
    if idx.ndim != 3 or tuple(idx.shape[1:]) != header.grid or not 1 <= idx.shape[0] <= weights.config.stages:
        raise ValueError(f"indices {idx.shape} do not match a {header.grid} grid "
                         f"with 1..{weights.config.stages} stages")
    coded_cells = idx[0] >= 0 if flat is None else ~flat.uncoded
    if idx.min(initial=0) < -1 or idx.max(initial=0) >= weights.config.codebook_size or \
            not np.array_equal(idx[0] >= 0, coded_cells):
        raise ValueError("indices out of the codebook range (or -1, absent, in stage 1 outside the uncoded flat cells)")
    payload = None
    if enhancement is not None:  # what decompress returns as DecodedImage.enhancement
        layer = enhancecoding.cached_enhancement(enhancecoding.locate_enhancement(enhancement.model_id, "<pack>"))
        payload = _layer_payload(layer, enhancement, None if flat is None else flat.mask)[0]
    return encode_file(weights, em, idx, width, height, mode, vqz.pack_alpha(alpha) if alpha is not None else None,
                       flat, block, payload).data


# -- compress -----------------------------------------------------------------------------------
@dataclass
class StageCoding:
    """How one stage of one image was coded (vqcli.usage.StageUsage is a codebook's usage)."""

    stage: int  # 1-based
    bytes: int  # chunk payload
    bits_per_index: float  # coded, per index the stage holds
    entropy: float  # empirical entropy of this image's indices, bits/index
    cross_entropy: float  # ideal bits/index under the entropy model's tables
    codes_used: int
    coverage: float = 1.0  # share of the latent positions the stage covers (stage map)

    @property
    def bits(self) -> int:
        return 8 * self.bytes


@dataclass
class EnhancementCoding:
    """How the enhancement layer of one file was coded."""

    model_id: str
    level: float  # 0 = the layer's finest
    bytes: int  # chunk payload
    symbols: int  # coded (outside flat cells)
    bits_per_symbol: float
    cross_entropy: float  # ideal bits/symbol under the tables

    @classmethod
    def of(cls, e: Enhanced) -> EnhancementCoding:
        n = max(1, e.coded)
        return cls(e.layer.model_id, e.symbols.level / LEVEL_ONE, len(e.payload), e.coded, 8 * len(e.payload) / n,
                   e.ideal_bits / n)


@dataclass
class CompressResult:
    data: bytes
    width: int
    height: int
    mode: str
    stages: int  # stages stored (the most any block keeps)
    model_stages: int
    entropy_model: str
    stage_coding: list[StageCoding]  # one per stored stage
    rate: str  # how the rate was chosen
    note: str | None = None  # e.g. a rate target that could not be met
    psnr_by_quality: dict[int, float] = field(default_factory=dict)  # the qualities --psnr tried
    quality: float | None = None  # None: uniform stages (--stages)
    stage_map_bytes: int | None = None
    effort: int = DEFAULT_EFFORT
    flat_cells: int = 0  # latent cells coded as one colour (vqcli.flatcells)
    flat_cell_bytes: int | None = None  # their chunk's payload (format 3)
    enhancement: EnhancementCoding | None = None  # the enhancement layer's part (format 4)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.width * self.height)

    def to_dict(self) -> dict:
        return {
            "bytes": len(self.data), "width": self.width, "height": self.height, "mode": self.mode,
            "bpp": self.bpp, "stages": self.stages, "model_stages": self.model_stages,
            "entropy_model": self.entropy_model, "rate": self.rate, "quality": self.quality, "note": self.note,
            "stage_map_bytes": self.stage_map_bytes, "effort": self.effort, "flat_cells": self.flat_cells,
            "flat_cell_bytes": self.flat_cell_bytes,
            "enhancement": None if self.enhancement is None else self.enhancement.__dict__,
            "stage_stats": [{**s.__dict__, "bits": s.bits} for s in self.stage_coding],
            **({"psnr_by_quality": self.psnr_by_quality} if self.psnr_by_quality else {}),
        }


def colour_mode(image: LoadedImage) -> str:
    grey = image.mode in GREY_SOURCES
    if image.alpha is not None:
        return "LA" if grey else "RGBA"
    return "L" if grey else "RGB"


class ImageEncoder:
    """The indices of one image, coded at any rate: uniform prefixes or stage maps, with codes
    searched at the given effort (EFFORTS). Uncoded flat cells (vqcli.flatcells) hold no indices at any rate."""

    def __init__(self, weights: Weights, em: EntropyModel, image: LoadedImage, mode: str,
                 effort: int = DEFAULT_EFFORT, enhance: bool = False) -> None:
        self.weights, self.em, self.mode, self.effort, self.enhance = weights, em, mode, effort, enhance
        self.rgb = image.rgb
        self.height, self.width = image.rgb.shape[:2]
        self.flat = flatcells.find(image.rgb, weights.model.factor)
        if self.flat.mask.all():  # a flat image: no index to find
            cfg, grid = weights.config, self.flat.mask.shape
            self.idx, self.err = np.zeros((cfg.stages, *grid), dtype=np.int64), np.zeros((cfg.stages, *grid))
            self.latent = torch.zeros((*grid, cfg.latent_dim))
        else:
            enc = tiling.encode(weights.model, image.rgb, errors=True, latent=self.effort > 0)
            self.idx, self.err, self.latent = np.ascontiguousarray(enc.indices.numpy()), enc.errors.numpy(), enc.latent
        self.alpha = vqz.pack_alpha(image.alpha) if image.alpha is not None else None
        self._bits: np.ndarray | None = None  # each greedy index's bits, for the stage map
        # the last enhancement base (quality, file, pixels): a rate search tries a new one each time,
        # and a 24 MP base's pixels are 72 MB
        self._base: tuple[float, Coded, np.ndarray] | None = None
        self._tables: list[torch.Tensor] | None = None  # the entropy model's bit tables, for the search

    def _beam_codes(self, per_position: np.ndarray, price: np.ndarray | None) -> np.ndarray:
        """Indices [n, h, w] found by beam search to each position's depth (-1 below it, n at
        least 1); bits priced at `price` [h, w] (squared latent error per bit), or not at all."""
        beam, _ = EFFORTS[self.effort]
        model = self.weights.model
        device = next(model.parameters()).device
        if price is not None and self._tables is None:
            self._tables = [torch.from_numpy(t).float() for t in self.em.bit_tables()]
        tables = None if price is None else self._tables
        out = np.full((max(1, int(per_position.max())), *per_position.shape), -1, dtype=np.int64)
        flat_out, latent = out.reshape(out.shape[0], -1), self.latent.reshape(-1, self.latent.shape[-1])
        for depth in range(1, out.shape[0] + 1):
            where = np.flatnonzero(per_position.ravel() == depth)
            for i in range(0, where.size, SEARCH_ROWS):  # in slices: a 100 MP latent is 200 MB
                rows = where[i:i + SEARCH_ROWS]
                p = None if price is None else torch.from_numpy(price.ravel()[rows]).float().to(device)
                found = model.quantizer.beam_encode(latent[torch.from_numpy(rows)].to(device), depth, beam, tables, p)
                flat_out[:depth, rows] = found.cpu().numpy().T
        return out

    def _file(self, per_position: np.ndarray, price: np.ndarray | None) -> Coded:
        """The file keeping per_position [h, w] stages at each cell (none at an uncoded flat cell)."""
        per_position = per_position * ~self.flat.uncoded
        if self.effort == 0:
            idx = stagemap.apply(self.idx[:max(1, int(per_position.max()))], per_position)
        else:
            idx = self._beam_codes(per_position, price)
        return encode_file(self.weights, self.em, idx, self.width, self.height, self.mode, self.alpha, self.flat)

    def uniform(self, n: int) -> Coded:
        return self._file(np.full(self.idx.shape[1:], n), None)

    def adaptive(self, quality: float) -> Coded:
        if self._bits is None:
            self._bits = self.em.symbol_bits(self.idx)
        lam = stagemap.lam(quality)
        counts = stagemap.choose(self.err, self._bits, lam, skip=self.flat.uncoded)
        price = None if self.effort == 0 else EFFORTS[self.effort][1] * stagemap.price(self.err, lam, skip=self.flat.uncoded)
        return self._file(stagemap.expand(counts, self.idx.shape[1:]), price)

    @functools.cached_property
    def layer(self) -> EnhanceWeights | None:
        """The weights' enhancement layer (with enhance), looked up and loaded on first need."""
        return enhancement_for(self.weights) if self.enhance else None

    def at_quality(self, quality: float) -> Coded:
        """The file of a quality: the base's ladder, and above ENHANCE_FROM (with a layer) a base
        and the enhancement at the quality's level (rate.enhanced_rate)."""
        # the base's qualities never touch the layer: a default-quality compress does not load it
        layer = self.layer if quality > ENHANCE_FROM else None
        rate = None if layer is None else enhanced_rate(quality, layer.config.levels)
        if rate is None or self.flat.mask.all():  # a flat image is exact already
            return self.adaptive(quality)
        return self.enhanced(*rate)

    def enhanced(self, base_quality: float, level: int, deadzone: float = 0.0) -> Coded:
        """The base at a quality plus the enhancement at a fixed-point level, quantized with a
        dead zone (Enhancement.quantize)."""
        layer = self.layer
        if self._base is None or self._base[0] != base_quality:
            self._base = None  # let the old pixels go before the new ones are made
            base = self.adaptive(base_quality)
            self._base = base_quality, base, self.decode(base)
        _, base, base_rgb = self._base
        grid = enhancecoding.latent_grid(self.idx.shape[1:], self.weights.model.factor)
        sym = tiling.enhance_encode(layer.net, self.rgb, base_rgb, layer.net.steps(level / LEVEL_ONE), grid,
                                    deadzone=deadzone)
        sym[:, ~enhancecoding.coded_cells(self.flat.mask, grid)] = 0
        symbols = LayerSymbols(layer.model_id, level, sym)
        payload, bits, n = _layer_payload(layer, symbols, self.flat.mask)
        coded = encode_file(self.weights, self.em, base.indices, self.width, self.height, self.mode, self.alpha,
                            self.flat, enhancement=payload, same=base)
        coded.enhancement = Enhanced(layer, symbols, base_rgb, payload, bits, n)
        return coded

    def decode(self, c: Coded) -> np.ndarray:
        """The pixels a reader gets from a file of this image."""
        if c.enhancement is not None:
            e = c.enhancement
            return enhance_pixels(e.layer, e.symbols, e.base_rgb, self.flat, self.weights.model.factor)
        return decode_indices(self.weights, c.indices, self.width, self.height, flat=self.flat)

    def bpp(self, c: Coded) -> float:
        return 8 * len(c.data) / (self.width * self.height)


def enhance_pixels(layer: EnhanceWeights, ls: LayerSymbols, base_rgb: np.ndarray, flat: FlatCells | None,
                   factor: int) -> np.ndarray:
    """The enhanced image from a layer's symbols over the base's pixels (flat cells repainted)."""
    rgb = tiling.enhance_decode(layer.net, ls.symbols, base_rgb, layer.net.steps(ls.level / LEVEL_ONE))
    if flat is not None and flat.count:
        flat.paint(rgb, factor)
    return rgb


def _search(ok, lo: int = 0, hi: int = 100) -> int | None:
    """The largest integer quality in lo..hi with ok(q) true, for ok true up to a point and false
    after (None if ok(lo) is false)."""
    if not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _unreachable(name: str, why: str, best_effort: bool, instead: str) -> str:
    """The note of a rate target no quality meets, or (without best_effort) the error."""
    if not best_effort:
        raise VQError(f"{name}: {why} (best_effort writes the nearest file)", params=("best_effort",))
    return f"{why}; {instead}"


def _at_bpp(enc: ImageEncoder, bpp: float, name: str, best_effort: bool) -> tuple[Coded, int, str | None]:
    """(file, quality, note): the highest quality whose file fits bpp (quality 0 with a note,
    under best_effort, when none does)."""
    # only the answer so far is kept (the binary search's fits only rise): big files are big
    kept: dict[int, Coded] = {}

    def fits(q: int) -> bool:
        c = enc.at_quality(q)
        ok = enc.bpp(c) <= bpp
        if ok or q == 0:
            kept.clear()
            kept[q] = c
        return ok

    quality = _search(fits)
    if quality is not None:
        return kept[quality], quality, None
    return kept[0], 0, _unreachable(name, f"even quality 0 needs {enc.bpp(kept[0]):.3f} bpp > {bpp:g}", best_effort,
                                    "used quality 0")


def _at_psnr(enc: ImageEncoder, rgb: np.ndarray, psnr: float, name: str, best_effort: bool
             ) -> tuple[Coded, int, str | None, dict[int, float]]:
    """(file, quality, note, the PSNR of each quality tried): the lowest quality that reaches psnr
    (quality 100 with a note, under best_effort, when none does)."""
    kept: dict[int, Coded] = {}  # only the answer so far: the lowest quality reaching psnr, or 100
    by_quality: dict[int, float] = {}

    def short(q: int) -> bool:  # below the target: the answer is the next quality up
        c = enc.at_quality(q)
        by_quality[q] = metrics.psnr(rgb, enc.decode(c))
        if by_quality[q] >= psnr or q == 100:
            kept.clear()
            kept[q] = c
        return by_quality[q] < psnr

    below = _search(short)
    quality, note = 0 if below is None else below + 1, None
    if quality > 100:
        quality = 100
        note = _unreachable(name, f"no quality reaches {psnr:g} dB (best {by_quality[100]:.2f} dB)", best_effort,
                            "used quality 100")
    return kept[quality] if quality in kept else enc.at_quality(quality), quality, note, \
        {q: by_quality[q] for q in sorted(by_quality)}


def _stage_coding(coded: Coded) -> list[StageCoding]:
    """How each stage of a file was coded."""
    out = []
    for s, payload in enumerate(coded.payloads):
        kept = coded.indices[s][coded.indices[s] >= 0]
        per = max(kept.size, 1)  # a flat image codes no index
        out.append(StageCoding(s + 1, len(payload), 8 * len(payload) / per, metrics.entropy_bits(np.bincount(kept)),
                               coded.ideal[s] / per, int(np.unique(kept).size), kept.size / coded.indices[s].size))
    return out


def compress(weights: Weights, image: LoadedImage, stages: int | None = None, bpp: float | None = None,
             psnr: float | None = None, entropy: str = "auto", name: str = "<input>",
             quality: float | None = None, effort: int | None = None, best_effort: bool = False,
             enhance: bool = True) -> CompressResult:
    """Encode an image; at most one of stages / quality / bpp / psnr picks the rate (default:
    default_quality); effort 0..2 how hard to search for codes (EFFORTS; default
    DEFAULT_EFFORT). name: the input's name for error messages.

    A --bpp or --psnr target that no quality meets is a VQError, unless best_effort: then the
    nearest file is made (quality 0 or 100) and the result's note says so. enhance: use the
    enhancement layer found for the weights (enhancecoding.find_enhancement) above ENHANCE_FROM."""
    total = weights.config.stages
    check_rate(stages, bpp, psnr, total, quality)
    effort = check_effort(effort)
    height, width = image.rgb.shape[:2]
    mode = colour_mode(image)
    em = entropy_model(weights, entropy)
    vqz.check_header(_header(weights, width, height, total, mode, em), name)
    enc = ImageEncoder(weights, em, image, mode, effort, enhance)
    note, by_quality = None, {}
    if stages is not None:
        coded, rate = enc.uniform(stages), f"--stages {stages}"
    elif bpp is not None:
        (coded, quality, note), rate = _at_bpp(enc, bpp, name, best_effort), f"--bpp {bpp:g}"
    elif psnr is not None:
        (coded, quality, note, by_quality), rate = _at_psnr(enc, image.rgb, psnr, name, best_effort), f"--psnr {psnr:g}"
    else:
        rate = f"--quality {quality:g}" if quality is not None else "default"
        quality = default_quality(weights, enhance) if quality is None else quality
        coded = enc.at_quality(quality)
    return CompressResult(coded.data, width, height, mode, len(coded.payloads), total, em.kind, _stage_coding(coded),
                          rate, note, by_quality, None if stages is not None else float(quality),
                          len(coded.stage_map) if coded.stage_map is not None else None, effort,
                          enc.flat.count, len(coded.flat) if coded.flat is not None else None,
                          None if coded.enhancement is None else EnhancementCoding.of(coded.enhancement))


# -- decompress ---------------------------------------------------------------------------------
@dataclass
class DecodedImage:
    rgb: np.ndarray  # uint8 [H, W, 3]
    alpha: np.ndarray | None  # uint8 [H, W]
    header: vqz.Header
    stages: int  # stages decoded
    indices: np.ndarray  # int64 [stages, h, w], -1 where a stage map drops a stage and at uncoded flat cells
    truncated: bool = False  # the file held fewer stages than its header announced
    cut_inside: str | None = None  # the chunk a cut falls in, after the stages asked for
    flat: FlatCells | None = None  # cells coded as one colour (format 3)
    enhancement: LayerSymbols | None = None  # the enhancement layer's part (format 4), when decoded

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
           max_pixels: int | None = MAX_PIXELS) -> tuple[vqz.Container, np.ndarray, FlatCells | None]:
    """Parse and entropy-decode a file -> (container, int64 indices [n, h, w], its flat cells).

    Work is bounded by the file: the pixel count by max_pixels (None: no limit), every stage
    payload by the fewest bytes its indices can code to, checked before anything of the grid's
    size is allocated, and every payload must be consumed exactly."""
    c = vqz.read(data, name, upto=stages)
    h = c.header
    check_size(h.width, h.height, name, max_pixels)
    if h.model_id != weights.model_id:
        where = f" ({weights.path})" if weights.path else ""
        raise VQError(f"{name}: made with model {h.model_id}, but the weights{where} are model {weights.model_id}")
    cfg = weights.config
    if (h.factor, h.model_stages, h.codebook) != (cfg.downsample, cfg.stages, cfg.codebook_size):
        raise VQError(f"{name}: header does not match model {weights.model_id} (factor, stages, codebook)")
    n = c.stages_available
    if stages is not None:  # at most that many: with stage maps, files of one folder hold different counts
        if stages < 1:
            raise UsageError(f"stages {stages}: must be at least 1", params=("stages",))
        n = min(stages, n)
    try:
        em = entropy_model(weights, h.entropy)
    except VQError as e:
        raise VQError(f"{name}: {e}") from None
    grid = h.grid
    flat = flatcells.decode(c.flat, grid, name) if c.flat is not None else None
    coded = None if flat is None else ~flat.uncoded  # what stage 1 covers
    em.check_payload(0, c.stage_sizes[0], grid[0] * grid[1] if coded is None else int(coded.sum()), name)
    active: list[np.ndarray | None] = [coded] + [None] * (n - 1)
    if c.stage_map is not None:
        counts, block = stagemap.decode(c.stage_map, grid, h.stages, name)
        per_position = stagemap.expand(counts, grid, block) * (1 if coded is None else coded)
        active = [coded] + [per_position > s for s in range(1, n)]
    for s in range(1, n):
        em.check_payload(s, c.stage_sizes[s], grid[0] * grid[1] if active[s] is None else
                         int(active[s].sum()), name)
    out = np.empty((n, *grid), dtype=np.int64)
    for s in range(n):
        out[s] = em.decode_stage(s, c.stage_chunks[s], grid, out[s - 1] if s else None, name, active[s])
    return c, out, flat


def decompress(weights: Weights, data: bytes, stages: int | None = None, name: str = "<input>",
               max_pixels: int | None = MAX_PIXELS) -> DecodedImage:
    """Decode a .vqz file (at most its first `stages` stages; default all it holds), refusing
    images of more than max_pixels pixels (None: no limit). A file cut inside a chunk still
    decodes when the stages asked for end before the cut."""
    c, idx, flat = unpack(weights, data, stages, name, max_pixels)
    h = c.header
    alpha = vqz.unpack_alpha(c.alpha, h, name) if c.alpha is not None else None
    rgb = decode_indices(weights, idx, h.width, h.height, flat=flat)
    layer_symbols = None
    if c.enhancement is not None and idx.shape[0] == h.stages:  # the layer refines the whole base, not a prefix
        rgb, layer_symbols = _enhance(weights, c.enhancement, h.grid, rgb, flat, name)
    return DecodedImage(rgb, alpha, h, idx.shape[0], idx, c.truncated, c.cut_inside, flat, layer_symbols)


def _enhance(weights: Weights, e: vqz.EnhancementChunk, grid: tuple[int, int], base_rgb: np.ndarray,
             flat: FlatCells | None, name: str) -> tuple[np.ndarray, LayerSymbols]:
    """The pixels of a file's enhancement chunk over its base's pixels, and its symbols."""
    layer = enhancecoding.cached_enhancement(enhancecoding.locate_enhancement(e.model_id, name),
                                             next(weights.model.parameters()).device)
    if layer.base_id != weights.model_id:
        raise VQError(f"{name}: enhancement layer {e.model_id} is for model {layer.base_id}, not {weights.model_id}")
    table = enhancecoding.table_level(e.level)
    if table >= layer.config.levels:
        raise VQError(f"{name}: corrupt enhancement chunk (level {e.level / LEVEL_ONE:g} of a layer with "
                      f"{layer.config.levels})")
    grid = enhancecoding.latent_grid(grid, weights.model.factor)
    keep = enhancecoding.coded_cells(flat.mask if flat is not None else None, grid)
    ls = LayerSymbols(e.model_id, e.level, enhancecoding.decode_symbols(layer, e.stream, table, keep, name))
    return enhance_pixels(layer, ls, base_rgb, flat, weights.model.factor), ls
