"""Enhancement layers on disk and in the entropy coder: weights files, integer tables, and the
symbols' byte stream.

A layer's weights are a safetensors file (metadata ``format`` = "vqcli-enhancement") holding the
network (vqcli.enhance; with EnhanceConfig.predictor, its int32 ``predictor`` too),
``stats.counts`` [levels, C, contexts, alphabet]: how often each symbol occurred per level,
channel and context bucket on the training crops, and the model id of the base it was trained
over (``base_model``). Its own id hashes every tensor, as a base model's does; a .vqz names the
layer by that id.

Coding (docs/FORMAT.md, enhancement chunk): channel by channel (with same_channel, each in two
checkerboard passes, or four of a 2x2 grid); the positions of a pass ordered by context bucket,
then raster; each bucket's run coded with one fixed table, ``quantize(counts + 1)`` to a total of
2^16, by constriction's ANS. The tables and contexts are integers, so a stream parses identically
on every device.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .enhance import (
    FACTOR,
    PREDICTOR_LIMIT,
    ContextRule,
    EnhanceConfig,
    Enhancement,
    channel_contexts,
    contexts,
    predictor_bound,
)
from .entropy import min_stream_bits, probabilities, quantize
from .errors import VQError
from .weights import model_id_of, read_safetensors, unpack_counts, write_packed

KIND = "vqcli-enhancement"
FORMAT_VERSION = "1"
TOTAL = 1 << 16


@dataclass
class EnhanceWeights:
    """A loaded enhancement layer."""

    net: Enhancement
    config: EnhanceConfig
    model_id: str
    base_id: str
    counts: np.ndarray  # int64 [levels, C, contexts, alphabet]
    training: dict
    path: Path | None = None
    _models: dict = field(default_factory=dict, repr=False, compare=False)  # coder_models'

    @cached_property
    def tables(self) -> np.ndarray:
        """Integer frequencies [levels, C, contexts, alphabet], each row summing to TOTAL."""
        return quantize(self.counts + 1, TOTAL)

    @cached_property
    def rule(self) -> ContextRule:
        return self.net.context_rule()

    @cached_property
    def min_symbol_bits(self) -> float:
        """The fewest bits any symbol can cost (with a count of slack for constriction's rounding)."""
        return -math.log2(min(1.0, (int(self.tables.max()) + 1) / TOTAL))

    def coder_models(self, level: int) -> list[list]:
        """constriction's model of every table of a level ([channel][bucket]), built together
        once (about 2 ms): every image asks for the same few hundred, each for a short run of
        symbols. Built before a stream's big temporaries, not one by one between them, where the
        small objects pinned freed memory (24 MP decode at quality 70: 1.35 GB peak instead of 1.0)."""
        models = self._models.get(level)
        if models is None:
            import constriction

            p = probabilities(self.tables[level], TOTAL)
            models = self._models[level] = [[constriction.stream.model.Categorical(row, perfect=False) for row in rows]
                                            for rows in p]
        return models

    def check_payload(self, stream_bytes: int, n: int, name: str) -> None:
        """Refuse a stream too short to hold n symbols, before any work of size n."""
        if 8 * stream_bytes < min_stream_bits(n, self.min_symbol_bits):
            raise VQError(f"{name}: corrupt enhancement chunk ({stream_bytes} bytes cannot hold {n} symbols)")

    def min_stream_bytes(self, n: int) -> int:
        return max(0, math.ceil(min_stream_bits(n, self.min_symbol_bits) / 8))


def _id_of(tensors: dict[str, torch.Tensor], base_id: str) -> str:
    """The layer's id: a hash of its tensors and of the base it refines."""
    return model_id_of({**tensors, "base_model": torch.tensor(list(bytes.fromhex(base_id)), dtype=torch.uint8)})


def count_symbols(net: Enhancement, x: torch.Tensor, base: torch.Tensor, batch: int = 32) -> np.ndarray:
    """Symbol counts [levels, C, contexts, alphabet] of crops x given the base's reconstruction."""
    cfg = net.cfg
    counts = np.zeros((cfg.levels, cfg.channels, cfg.contexts, cfg.alphabet), dtype=np.int64)
    rule = net.context_rule()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb, bb = x[i:i + batch], base[i:i + batch]
            feats = net.features(bb)
            for lv in range(cfg.levels):
                sym = net.quantize(net.analyse(xb, bb, feats, net.steps(float(lv)))).long()
                ctx = contexts(sym, rule)
                key = ((torch.arange(cfg.channels).view(1, -1, 1, 1) * cfg.contexts + ctx) * cfg.alphabet
                       + sym + cfg.radius)
                counts[lv] += np.bincount(key.ravel().numpy(), minlength=counts[lv].size).reshape(counts[lv].shape)
    return counts


def save_enhancement(path: Path | str, net: Enhancement, counts: np.ndarray, base_id: str, training: dict) -> str:
    """Write a layer's weights file; returns its model id."""
    if int(counts.max()) >= 1 << 31:
        raise ValueError("symbol counts do not fit int32")
    # the network in float32; an integer buffer (the predictor) as it is
    tensors = {k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in net.state_dict().items()}
    tensors["stats.counts"] = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int32))
    mid = _id_of(tensors, base_id)
    meta = {"format": KIND, "format_version": FORMAT_VERSION, "config": json.dumps(net.cfg.to_dict()),
            "model_id": mid, "base_model": base_id, "training": json.dumps(training)}
    write_packed(path, tensors, meta)
    return mid


def compact_enhancement(path: Path | str) -> tuple[str, int, int]:
    """Rewrite a layer's file with its count table packed, in place; its id and every tensor the
    loader returns stay the same. Returns the id and the sizes before and after."""
    path = Path(path)
    tensors, meta = _read(path)
    before = path.stat().st_size
    return meta["model_id"], before, write_packed(path, tensors, meta)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A layer file's tensors (count table unpacked) and metadata, its format and id checked."""
    tensors, meta = read_safetensors(path, "an enhancement layer")
    if meta.get("format") != KIND:
        raise VQError(f"{path}: not vq enhancement weights (format {meta.get('format')!r})")
    tensors = unpack_counts(path, tensors, meta)
    try:
        same = _id_of(tensors, meta["base_model"]) == meta["model_id"]
    except KeyError as e:
        raise VQError(f"{path}: bad enhancement metadata (no {e})") from None
    except ValueError:  # a base id that is not hex
        same = False
    if not same:
        raise VQError(f"{path}: its tensors do not match its model id {meta['model_id']} (damaged file)")
    return tensors, meta


def load_enhancement(path: Path | str, device: str | torch.device = "cpu") -> EnhanceWeights:
    """Load and check a layer's weights file (one-line VQError on anything wrong)."""
    path = Path(path)
    tensors, meta = _read(path)
    try:
        cfg = EnhanceConfig(**json.loads(meta["config"]))
        base_id, mid = meta["base_model"], meta["model_id"]
        training = json.loads(meta.get("training", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise VQError(f"{path}: bad enhancement metadata ({e})") from None
    counts = tensors.pop("stats.counts", None)
    shape = (cfg.levels, cfg.channels, cfg.contexts, cfg.alphabet)
    if counts is None or tuple(counts.shape) != shape or counts.dtype != torch.int32 or int(counts.min()) < 0:
        raise VQError(f"{path}: bad enhancement tables (stats.counts must be int32 {list(shape)}, >= 0)")
    predictor = tensors.get("predictor")
    if predictor is not None and predictor.dtype != torch.int32:
        raise VQError(f"{path}: bad enhancement tables (predictor must be int32, not {predictor.dtype})")
    net = Enhancement(cfg)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        raise VQError(f"{path}: enhancement tensors do not match its config ({str(e).splitlines()[0]})") from None
    if cfg.predictor and predictor_bound(net.predictor, cfg.radius) >= PREDICTOR_LIMIT:
        raise VQError(f"{path}: bad enhancement tables (predictor weights too large: its sums must fit int32)")
    # channels-last convolutions: about a fifth faster on CPU (measured on a 768x512 decode)
    net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    return EnhanceWeights(net, cfg, mid, base_id, counts.numpy().astype(np.int64), training, path)


# -- the symbol stream -------------------------------------------------------------------------------
def _runs(ctx: np.ndarray, keep: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(bucket, raster positions) of the kept positions of one channel, in coding order."""
    pos = np.flatnonzero(keep.ravel())
    # buckets fit a byte (EnhanceConfig.contexts), and a stable sort of bytes is a radix sort
    b = ctx.ravel()[pos].astype(np.uint8)
    order = pos[np.argsort(b, kind="stable")]
    counts = np.bincount(b)
    ends = np.cumsum(counts)
    return [(int(k), order[ends[k] - counts[k]:ends[k]]) for k in np.flatnonzero(counts)]


def _pass_cells(keep: np.ndarray, cells: torch.Tensor | None) -> np.ndarray:
    """The kept cells of one pass of channel_contexts (cells None: the whole channel)."""
    return keep if cells is None else keep & cells.numpy()


def encode_symbols(ew: EnhanceWeights, sym: np.ndarray, level: int, keep: np.ndarray) -> tuple[bytes, float]:
    """The stream of symbols [C, h, w] (int8, |s| <= radius; 0 where keep [h, w] is False, not
    coded) at a table level -> (stream bytes, ideal bits)."""
    import constriction

    r = ew.config.radius
    tables = ew.tables[level]
    models = ew.coder_models(level)
    # one uint8 block (a 24 MP image's is 48 MB): small planes kept between each channel's large
    # temporaries would pin the freed memory (peak RSS +0.8 GB at 24 MP)
    ctxs = np.empty(sym.shape, dtype=np.uint8)
    passes: list[np.ndarray] = []  # every channel has the same passes: channel 0's
    for c, cells, ctx in channel_contexts(torch.from_numpy(sym), ew.rule):
        np.copyto(ctxs[c], ctx.numpy(), casting="unsafe", where=True if cells is None else cells.numpy())
        if c == 0:
            passes.append(_pass_cells(keep, cells))
    coder = constriction.stream.stack.AnsCoder()
    bits = 0.0
    # ANS is a stack: the last pass's last run goes in first, so that decoding runs forward.
    for c in reversed(range(len(ctxs))):
        for cells in reversed(passes):
            for k, pos in reversed(_runs(ctxs[c], cells)):
                s = sym[c].ravel()[pos].astype(np.int32) + r
                coder.encode_reverse(s, models[c][k])
                bits += float(-np.log2(tables[c, k][s] / TOTAL).sum())
    return coder.get_compressed().astype("<u4").tobytes(), bits


def decode_symbols(ew: EnhanceWeights, stream: bytes, level: int, keep: np.ndarray, name: str) -> np.ndarray:
    """Inverse of encode_symbols -> int8 symbols [C, h, w]."""
    import constriction

    cfg = ew.config
    n = int(keep.sum()) * cfg.channels
    if len(stream) % 4:
        raise VQError(f"{name}: corrupt enhancement chunk (length {len(stream)} is not whole words)")
    ew.check_payload(len(stream), n, name)
    models = ew.coder_models(level)
    sym = np.zeros((cfg.channels, *keep.shape), dtype=np.int8)
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32))
        # fills sym pass by pass
        for c, cells, ctx in channel_contexts(torch.from_numpy(sym), ew.rule):
            plane = sym[c].reshape(-1)
            for k, pos in _runs(ctx.numpy(), _pass_cells(keep, cells)):
                plane[pos] = np.asarray(coder.decode(models[c][k], pos.size), dtype=np.int64) - cfg.radius
        unfinished = not coder.is_empty()
    except (ValueError, RuntimeError, AssertionError) as e:
        raise VQError(f"{name}: corrupt enhancement chunk ({e})") from None
    if unfinished:
        raise VQError(f"{name}: corrupt enhancement chunk (its stream does not end with its {n} symbols)")
    return sym


def table_level(level: int) -> int:
    """The trained level whose tables code a fixed-point level (the nearer one)."""
    from .format import LEVEL_ONE

    return (level + LEVEL_ONE // 2) // LEVEL_ONE


def coded_cells(flat_mask: np.ndarray | None, grid: tuple[int, int]) -> np.ndarray:
    """bool [gh, gw]: the enhancement cells that hold symbols: all but those inside a flat base
    cell (painted exactly anyway)."""
    if flat_mask is None:
        return np.ones(grid, dtype=bool)
    r = grid[0] // flat_mask.shape[0]
    return ~np.repeat(np.repeat(flat_mask, r, 0), r, 1)


def latent_grid(grid: tuple[int, int], base_factor: int) -> tuple[int, int]:
    """The enhancement's latent grid (h, w) over a base latent grid."""
    r = base_factor // FACTOR
    return grid[0] * r, grid[1] * r


# -- finding a layer ------------------------------------------------------------------------------
ENHANCE_DIR = "enhance"
"""Layers live in an `enhance/` folder beside the weights they enhance (shipped: weights/enhance/)."""
DEFAULT_LAYER = "default.safetensors"
"""The layer a new file uses, where a folder holds several over one base."""
_LOADED: dict[tuple[Path, str], EnhanceWeights] = {}


def _layers() -> list[tuple[Path, dict[str, str]]]:
    """(file, metadata) of every layer on the weights search path and in its enhance/ folders, in
    search order. Every compress asks, so the header scan is kept while the folders are unchanged."""
    from .weightspath import weights_search_path

    folders = [d for folder in weights_search_path() for d in (folder, folder / ENHANCE_DIR) if d.is_dir()]
    return _scan(tuple((d, d.stat().st_mtime_ns) for d in folders))


@functools.lru_cache(maxsize=8)
def _scan(folders: tuple[tuple[Path, int], ...]) -> list[tuple[Path, dict[str, str]]]:
    from .weightspath import read_metadata

    # a folder's default.safetensors first: older layers stay beside it, under their ids, for their files
    found = ((p, read_metadata(p) or {}) for d, _ in folders
             for p in sorted(d.glob("*.safetensors"), key=lambda p: (p.name != DEFAULT_LAYER, p.name)))
    return [(p, meta) for p, meta in found if meta.get("format") == KIND]


def find_enhancement(base_id: str) -> Path | None:
    """The first layer on the weights search path trained over base model base_id (in each
    folder, DEFAULT_LAYER first), or None."""
    return next((p for p, meta in _layers() if meta.get("base_model") == base_id), None)


def locate_enhancement(model_id: str, name: str) -> Path:
    """The layer a file names by id, or a VQError naming the id."""
    found = next((p for p, meta in _layers() if meta.get("model_id") == model_id), None)
    if found is None:
        raise VQError(f"{name}: made with enhancement layer {model_id}, and no layer of that id was found "
                      f"(searched the weights search path and its {ENHANCE_DIR}/ folders)")
    return found


def cached_enhancement(path: Path, device: str | torch.device = "cpu") -> EnhanceWeights:
    """load_enhancement, once per file and device."""
    key = (Path(path).resolve(), str(device))
    if key not in _LOADED:
        _LOADED[key] = load_enhancement(path, device)
    return _LOADED[key]
