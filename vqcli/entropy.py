"""The entropy model of the stage chunks: integer frequency tables coded with constriction's ANS.

Determinism: every table is integer (numpy int64), derived from integer counts stored with the
weights by integer arithmetic only. constriction gets them as float64 ``freq / TOTAL``; TOTAL is
a power of two, so that conversion is exact and the coder sees the same numbers on every machine,
whatever the device or thread count the indices came from.

Two models, named in each file's header:

- ``static``: one table per stage from ``stats.histogram`` [S, K] (the training-set index counts).
- ``context``: the code at a latent position is conditioned on a code already known to the
  decoder there: for stage s >= 1 the previous stage's code at the same position, for stage 0
  the code one row up (the first row uses the static table). Counts [S, K, K] come from
  ``stats.context`` (``context[s, a, b]`` = how often code b followed context code a), blended
  with the static table as PSEUDO pseudo-counts so that rare contexts stay close to the prior.
  Measured with the shipped model on the 49 val images (tools/measure_entropy.py): about 11%
  fewer bits than the static prior (stage 1 gains most: 5.6 vs 7.4 bits per index); coded size
  within 0.1% of the ideal -sum log2 p.
  Weights without ``stats.context`` only offer the static model.
- ``spatial``: each index is conditioned on several known codes at once, a product of experts
  in integer arithmetic (see SpatialModel): the previous stage's code at the same position
  (stage >= 1), and the same stage's codes one up and one to the left. Which experts a stage uses
  is stored with the weights (``stats.context_experts``, a bit mask per stage); decoding runs
  along anti-diagonals, on which every up and left neighbour is already known, so each diagonal
  is one vectorised coder call. Needs ``stats.context_up`` and ``stats.context_left``.

Absent indices: a negative index marks a position the stage does not cover (an adaptive rate,
vqcli.stagemap). Such positions are not coded, and as a context they count as missing (the
static table, or no neighbour). Stage 1 always covers every position; a stage's positions are
a subset of the previous stage's, so the previous stage's code is known wherever it is needed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .arrays import to_numpy
from .errors import VQError

PSEUDO = 128  # prior strength of the static table in each context row, in pseudo-counts (tools/measure_entropy.py)
BLOCK = 4096  # symbols per constriction call (bounds the float64 [n, K] probability array)
CONTEXT_STAT = "context"
UP_STAT, LEFT_STAT, EXPERTS_STAT = "context_up", "context_left", "context_experts"
PREV, UP, LEFT = 1, 2, 4  # expert bits of stats.context_experts
RATIO_BITS = 16  # fixed point of the spatial model's ratio tables
ONE = 1 << RATIO_BITS
MAX_RATIO = 1 << (RATIO_BITS + 8)
DEFAULT_EXPERTS = (UP | LEFT, PREV | UP | LEFT, PREV | LEFT)
"""Experts of stages 1, 2, 3 (later stages: PREV): measured with the shipped model on val, a
neighbour saves 0.1-0.6 bits per index in the first three stages and under 0.05 bits after, where
its decode-time cost is not worth it (see the issue-11 note)."""
# ANS bits a stream can hold beyond its words' worth of -log2 p: what the coder's 64-bit state
# absorbs before it emits a word (see EntropyModel.min_payload_bits).
STATE_BITS = 64


def table_total(k: int) -> int:
    """The fixed frequency total: a power of two with room for at least 16 units per code."""
    return 1 << max(16, (k - 1).bit_length() + 4)


def quantize(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer weights [..., K] (>= 0) -> integer frequencies summing to `total`, each >= 1.

    Largest-remainder rounding of 1 + w * (total - K) / sum(w), ties to the lower code;
    integer arithmetic only.
    """
    w = np.asarray(weights, dtype=np.int64)
    k = w.shape[-1]
    if total < 2 * k:
        raise ValueError(f"frequency total {total} too small for {k} codes")
    w = np.where(w.sum(-1, keepdims=True) == 0, 1, np.maximum(w, 0))
    while w.max(initial=0) > (1 << 40):  # keep w * total inside int64
        w = np.where(w > 0, np.maximum(w >> 1, 1), 0)
    s = w.sum(-1, keepdims=True)
    num = w * (total - k)
    f = 1 + num // s
    rem = num % s
    short = total - f.sum(-1, keepdims=True)
    order = np.argsort(-rem, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(k), order.shape), axis=-1)
    return f + (rank < short)


@dataclass
class EntropyModel:
    """Integer tables for every stage; `context` is None for the static model. Each stage is coded
    by the StageCoder that stage_coder() picks once (a SpatialModel's neighbour stages differ)."""

    static: np.ndarray  # [S, K] int64, rows sum to total
    context: np.ndarray | None  # [S, K, K] int64: row a = table given context code a
    total: int
    _coders: dict[int, StageCoder] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return "static" if self.context is None else "context"

    @property
    def codebook(self) -> int:
        return self.static.shape[1]

    def stage_coder(self, stage: int) -> StageCoder:
        """How the stage is coded (chosen once per stage)."""
        if stage not in self._coders:
            self._coders[stage] = self._new_coder(stage)
        return self._coders[stage]

    def _new_coder(self, stage: int) -> StageCoder:
        return RasterCoder(self, stage)

    # -- rate estimates for the encoder ----------------------------------------------------
    def symbol_bits(self, indices: np.ndarray) -> np.ndarray:
        """Bits of every index of indices [S, h, w] under the stage-to-stage tables alone (no
        neighbours, which depend on what the stage map keeps): the stage map's rate estimate."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty(idx.shape, dtype=np.float64)
        for s in range(idx.shape[0]):
            raster = RasterCoder(self, s)
            ctx = raster.contexts(idx[s], idx[s - 1] if s else None)
            static = self.static[s][idx[s]]
            f = static if self.context is None else np.where(ctx < 0, static, self.context[s][np.maximum(ctx, 0), idx[s]])
            out[s] = -np.log2(f / self.total)
        return out

    def bit_tables(self) -> list[np.ndarray]:
        """Code lengths in bits under the stage-to-stage tables, as symbol_bits prices them but
        without stage 1's spatial context: stage 1's [K], then each later stage's [K, K] given
        the previous stage's code (a search over the stages, vqcli.quantizer.beam_encode)."""
        k = self.codebook
        out = [-np.log2(self.static[0] / self.total)]
        for s in range(1, self.static.shape[0]):
            f = np.broadcast_to(self.static[s], (k, k)) if self.context is None else self.context[s]
            out.append(-np.log2(f / self.total))
        return out

    # -- bounds on untrusted payloads ----------------------------------------------------------
    def min_symbol_bits(self, stage: int) -> float:
        """The fewest bits any index of the stage can cost."""
        return self.stage_coder(stage).min_bits()

    def min_payload_bits(self, stage: int, n: int) -> float:
        """A lower bound on the coded size of n indices of the stage.

        Exception, by construction of ANS: code 0 (cumulative frequency 0) coded into the empty
        start state costs nothing, so a stage whose last indices (first coded) are all 0 codes
        shorter. Readers refuse a payload below the bound (a few bytes could otherwise announce
        a whole grid of work); a writer pads such a stream to it (vqcli.format's padded stage
        chunk), never changing the indices.
        """
        return min_stream_bits(n, self.min_symbol_bits(stage))

    def min_payload_bytes(self, stage: int, n: int) -> int:
        """The bytes a stored stage payload of n indices must have (min_payload_bits, rounded up)."""
        return max(0, math.ceil(self.min_payload_bits(stage, n) / 8))

    def check_payload(self, stage: int, payload_bytes: int, n: int, name: str = "<input>") -> None:
        """Refuse a stage payload too short to hold n indices, before anything of size n is allocated
        (payload_bytes: as stored, padding included)."""
        need = self.min_payload_bits(stage, n)
        if 8 * payload_bytes < need:
            raise VQError(f"{name}: corrupt stage {stage + 1} chunk ({payload_bytes} bytes cannot hold "
                          f"{n} indices: at least {math.ceil(need / 8)} bytes under the model's tables)")

    # -- coding ----------------------------------------------------------------------------
    def freq_blocks(self, stage: int, grid: np.ndarray, prev: np.ndarray | None, order: np.ndarray | None = None,
                    reverse: bool = False):
        """(start, integer frequencies [n, K]) of the positions `order` (default: the stage's coding
        order), BLOCK positions at a time, last block first with reverse: the encoder side, where
        every context is known (memory bounded by BLOCK, whatever the image size)."""
        coder = self.stage_coder(stage)
        return coder.freq_blocks(grid, prev, coder.order(grid) if order is None else order, reverse)

    def ideal_bits(self, stage: int, grid: np.ndarray, prev: np.ndarray | None) -> float:
        """-sum log2 p of the stage's codes under this model (the size an ideal coder reaches)."""
        order = self.stage_coder(stage).order(grid)
        sym = grid.ravel()[order].astype(np.int64)
        return sum(_bits(f, sym[i:i + BLOCK], self.total) for i, f in self.freq_blocks(stage, grid, prev, order))

    def code_stage(self, stage: int, grid: np.ndarray, prev: np.ndarray | None) -> tuple[bytes, float]:
        """One stage's indices [h, w] (-1: absent, not coded) -> (payload, ideal bits), in one pass
        over its tables; prev = the previous stage's indices for stage >= 1."""
        import constriction

        order = self.stage_coder(stage).order(grid)
        sym = grid.ravel()[order].astype(np.int64)
        family = constriction.stream.model.Categorical(perfect=False)
        coder = constriction.stream.stack.AnsCoder()
        bits = 0.0
        # ANS is a stack: the blocks go in last to first, so that they decode first to last. The
        # stream does not depend on the block split, only on each symbol's table.
        for i, f in self.freq_blocks(stage, grid, prev, order, reverse=True):
            block = sym[i:i + BLOCK]
            coder.encode_reverse(block.astype(np.int32), family, probabilities(f, self.total))
            bits += _bits(f, block, self.total)
        return coder.get_compressed().astype("<u4").tobytes(), bits

    def encode_stage(self, stage: int, grid: np.ndarray, prev: np.ndarray | None) -> bytes:
        """Code one stage's indices [h, w]; prev = stage-1 indices for stage >= 1."""
        return self.code_stage(stage, grid, prev)[0]

    def encode_stages(self, indices: np.ndarray, ideal: list[float] | None = None) -> list[bytes]:
        """Payload of every stage of indices [s, h, w] (-1: absent); ideal: a list that receives
        each stage's ideal size in bits (as ideal_bits), from the same tables as the payload."""
        out = []
        for s in range(indices.shape[0]):
            payload, bits = self.code_stage(s, indices[s], indices[s - 1] if s else None)
            out.append(payload)
            if ideal is not None:
                ideal.append(bits)
        return out

    def decode_stage(self, stage: int, payload: bytes, shape: tuple[int, int], prev: np.ndarray | None,
                     name: str = "<input>", active: np.ndarray | None = None) -> np.ndarray:
        """Inverse of encode_stage -> int64 [h, w]; active: bool [h, w], the positions the stage
        covers (default all; -1 elsewhere). The caller bounds the payload first (check_payload)."""
        import constriction

        if len(payload) % 4:
            raise VQError(f"{name}: corrupt stage {stage + 1} chunk (length {len(payload)} is not whole words)")
        h, w = shape
        if active is None:
            active = np.ones((h, w), dtype=bool)
        family = constriction.stream.model.Categorical(perfect=False)
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
            out = np.full((h, w), -1, dtype=np.int64)
            self.stage_coder(stage).decode(coder, family, out, prev, active)
            unfinished = not coder.is_empty()  # a valid stream ends exactly in the coder's start state
        except (ValueError, RuntimeError, AssertionError) as e:
            raise VQError(f"{name}: corrupt stage {stage + 1} chunk ({e})") from None
        if unfinished:
            raise VQError(f"{name}: corrupt stage {stage + 1} chunk (its stream does not end with its "
                          f"{int(active.sum())} indices: surplus or missing words)")
        return out


def min_stream_bits(n: int, min_symbol_bits: float) -> float:
    """A lower bound on the bits of an ANS stream of n symbols that each cost at least
    min_symbol_bits, less what the coder's 64-bit state holds; readers refuse shorter streams."""
    return n * min_symbol_bits - STATE_BITS


def probabilities(f: np.ndarray, total: int) -> np.ndarray:
    """float64 [..., K] for constriction: exact (dyadic) and C-contiguous (it ignores strides)."""
    return np.ascontiguousarray(f, dtype=np.float64) / total


def _bits(f: np.ndarray, sym: np.ndarray, total: int) -> float:
    """-sum log2 p of symbols sym [n] under frequencies f [n, K]."""
    return float(-np.log2(np.take_along_axis(f, sym[:, None], 1)[:, 0] / total).sum())


class StageCoder:
    """How one stage's indices are ordered, given their tables and decoded."""

    def order(self, grid: np.ndarray) -> np.ndarray:
        """Raster indices of the coded (non-negative) positions, in coding order."""
        raise NotImplementedError

    def freq_blocks(self, grid: np.ndarray, prev: np.ndarray | None, order: np.ndarray, reverse: bool):
        """(start, frequencies [n, K]) of the positions `order`, BLOCK at a time."""
        raise NotImplementedError

    def min_bits(self) -> float:
        """The fewest bits any index can cost (the readers' payload bound)."""
        raise NotImplementedError

    def decode(self, coder, family, out: np.ndarray, prev: np.ndarray | None, active: np.ndarray) -> None:
        """Decode the active positions into out [h, w] (-1 filled), in coding order."""
        raise NotImplementedError


class RasterCoder(StageCoder):
    """The static and context models: raster order, each symbol's table chosen by a context code
    the decoder already has (the previous stage's code; for stage 1 the code one row up), or the
    static table where there is none."""

    def __init__(self, model: EntropyModel, stage: int) -> None:
        self.model, self.stage = model, stage

    def contexts(self, grid: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Context code per position [h, w] (-1: none, use the static table)."""
        h, w = grid.shape
        if self.model.context is None:
            return np.full((h, w), -1, dtype=np.int64)
        if self.stage > 0:
            return prev.astype(np.int64)
        up = np.full((h, w), -1, dtype=np.int64)
        up[1:] = grid[:-1]
        return up

    def freqs(self, ctx: np.ndarray) -> np.ndarray:
        """Frequencies [n, K] for context codes ctx [n]."""
        m, s = self.model, self.stage
        if m.context is None:
            return np.broadcast_to(m.static[s], (ctx.shape[0], m.codebook))
        return np.where((ctx < 0)[:, None], m.static[s][None], m.context[s][np.maximum(ctx, 0)])

    def order(self, grid: np.ndarray) -> np.ndarray:
        return coded(grid)

    def freq_blocks(self, grid: np.ndarray, prev: np.ndarray | None, order: np.ndarray, reverse: bool):
        ctx = self.contexts(grid, prev).ravel()[order]
        starts = range(0, order.size, BLOCK)
        for i in reversed(starts) if reverse else starts:
            yield i, self.freqs(ctx[i:i + BLOCK])

    def min_bits(self) -> float:
        # -log2 of the largest entry of any table, with a count of slack for constriction's rounding
        m = self.model
        top = int(m.static[self.stage].max())
        if m.context is not None:
            top = max(top, int(m.context[self.stage].max()))
        return -math.log2(min(1.0, (top + 1) / m.total))

    def decode(self, coder, family, out: np.ndarray, prev: np.ndarray | None, active: np.ndarray) -> None:
        h, w = out.shape
        total = self.model.total
        if self.model.context is not None and self.stage == 0:
            # The up-neighbour context of a row is the row before it: decode row by row.
            for r in range(h):
                ctx = out[r - 1] if r else np.full(w, -1, dtype=np.int64)
                cols = np.flatnonzero(active[r])
                out[r, cols] = coder.decode(family, probabilities(self.freqs(ctx[cols]), total))
            return
        keep = np.flatnonzero(active)
        ctx = self.contexts(out, prev).ravel()[keep]
        flat = out.reshape(-1)
        for i in range(0, keep.size, BLOCK):
            flat[keep[i:i + BLOCK]] = coder.decode(family, probabilities(self.freqs(ctx[i:i + BLOCK]), total))


@dataclass
class SpatialModel(EntropyModel):
    """The ``spatial`` model: per stage, the table of a symbol is the normalised product of the
    tables of its active experts (each a [K, K] table indexed by a known code), divided by the
    static table once per extra expert: p(b | a, u, l) ~ p(b | a) p(b | u) p(b | l) / p(b)^2,
    the naive-Bayes combination (DiagonalCoder). A stage whose experts include no neighbour is
    coded as by the context model."""

    up: np.ndarray | None = None  # [S, K, K] tables given the code one row up (same stage)
    left: np.ndarray | None = None  # [S, K, K] tables given the code to the left (same stage)
    experts: tuple[int, ...] = ()  # bit mask of PREV | UP | LEFT per stage

    def __post_init__(self) -> None:
        # table / static in RATIO_BITS fixed point, built once by integer division, capped at
        # MAX_RATIO (an expert raises a code's probability at most 256-fold) so that a product of
        # three experts stays below 2^32 before normalisation: no int64 overflow, whatever the weights.
        self.up_ratio = np.minimum((self.up << RATIO_BITS) // self.static[:, None, :], MAX_RATIO)
        self.left_ratio = np.minimum((self.left << RATIO_BITS) // self.static[:, None, :], MAX_RATIO)
        self._with_none: dict[int, dict[int, tuple[np.ndarray, np.ndarray | None]]] = {}

    def expert_tables(self, stage: int) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """Each expert's (table [K + 1, K], ratio table [K + 1, K] or None for PREV) at a stage,
        with a last row for no context (the static table, a ratio of one): a context code of -1
        picks it. Built once per stage."""
        if stage not in self._with_none:
            fs = self.static[stage][None]
            one = np.full_like(fs, ONE)
            self._with_none[stage] = {
                PREV: (np.concatenate([self.context[stage], fs]), None),
                UP: (np.concatenate([self.up[stage], fs]), np.concatenate([self.up_ratio[stage], one])),
                LEFT: (np.concatenate([self.left[stage], fs]), np.concatenate([self.left_ratio[stage], one]))}
        return self._with_none[stage]

    @property
    def kind(self) -> str:
        return "spatial"

    def expert_mask(self, stage: int) -> int:
        mask = self.experts[stage] if stage < len(self.experts) else PREV
        return mask & ~PREV if stage == 0 else mask

    def _new_coder(self, stage: int) -> StageCoder:
        if self.expert_mask(stage) & (UP | LEFT):
            return DiagonalCoder(self, stage)
        return RasterCoder(self, stage)


class DiagonalCoder(StageCoder):
    """A stage of the spatial model with a neighbour expert: symbols in anti-diagonal order (every
    up and left neighbour is decoded before them, so each diagonal is one vectorised coder call),
    each table the integer product of its experts' tables. Integer arithmetic only: products and
    shifts of integer frequencies and fixed-point ratios, then normalisation to `total` with the
    remainder on the most probable code. The most probable code's weight is capped at the others'
    sum (p <= ~1/2), so every index costs at least ~1 bit: that bounds how many indices a short
    payload can hold (check_payload), as for the other models."""

    def __init__(self, model: SpatialModel, stage: int) -> None:
        self.model, self.stage, self.mask = model, stage, model.expert_mask(stage)

    def _experts(self, prev: np.ndarray | None, up: np.ndarray, left: np.ndarray) -> list[tuple]:
        """(table [K + 1, K], ratio table [K + 1, K] or None, context codes, -1 for none) of each
        active expert, in the fixed order PREV, UP, LEFT (SpatialModel.expert_tables)."""
        tables = self.model.expert_tables(self.stage)
        return [(*tables[e], ctx) for e, ctx in ((PREV, prev), (UP, up), (LEFT, left)) if self.mask & e]

    def product(self, experts: list[tuple]) -> np.ndarray:
        """Integer frequencies [n, K] summing to total from each expert's (table, ratio table,
        contexts [n]).

        The first expert contributes its table, each further one its table divided by the static
        table (the ratio tables, precomputed in 16-bit fixed point, so that the per-symbol work is
        multiplications and shifts, not divisions); a missing context (-1) contributes the static
        table, or a ratio of one (the tables' last rows)."""
        m = self.model
        f = None
        for table, ratio, ctx in experts:  # f <= 2^16, then 2^24, then 2^32 (ratios <= 2^24)
            if f is None:
                f = table[ctx]
            else:
                f *= ratio[ctx]
                f >>= RATIO_BITS
                np.maximum(f, 1, out=f)
        rows = np.arange(f.shape[0])
        top = f.argmax(1)
        f_top = f[rows, top]
        f[rows, top] = np.minimum(f_top, f.sum(1) - f_top)  # the cap: p(top) <= ~1/2
        # Per-row shift to < 2^24 (frexp is exact below 2^53), then normalisation by a fixed-point
        # reciprocal: f * (total - K) * q < 2^62 with q = 2^46 // sum. Floors only, so the rounded
        # row sums at most `total`, and the remainder goes to the most probable code.
        shift = np.maximum(np.frexp(f.max(1).astype(np.float64))[1] - 24, 0)
        f >>= shift[:, None]
        np.maximum(f, 1, out=f)
        f *= (1 << 46) // f.sum(1, keepdims=True) * (m.total - m.codebook)  # in place: f * (total - K) * q
        f >>= 46
        f += 1
        f[rows, f.argmax(1)] += m.total - f.sum(1)
        return f

    def order(self, grid: np.ndarray) -> np.ndarray:
        order = _diagonal_order(*grid.shape)
        return order[grid.ravel()[order] >= 0]

    def freq_blocks(self, grid: np.ndarray, prev: np.ndarray | None, order: np.ndarray, reverse: bool):
        h, w = grid.shape
        up = np.full((h, w), -1, dtype=np.int64)
        up[1:] = grid[:-1]
        left = np.full((h, w), -1, dtype=np.int64)
        left[:, 1:] = grid[:, :-1]
        experts = [(t, r, c.ravel()[order]) for t, r, c in
                   self._experts(None if prev is None else prev.astype(np.int64), up, left)]
        starts = range(0, order.size, BLOCK)
        for i in reversed(starts) if reverse else starts:
            yield i, self.product([(t, r, c[i:i + BLOCK]) for t, r, c in experts])

    def min_bits(self) -> float:
        # The cap leaves the top code at most half the weight before normalisation; rounding adds
        # at most K units, and a count of slack covers constriction's fixed-point rounding.
        m = self.model
        return -math.log2(min(1.0, (m.total // 2 + m.codebook + 2) / m.total))

    def decode(self, coder, family, out: np.ndarray, prev: np.ndarray | None, active: np.ndarray) -> None:
        h, w = out.shape
        padded = np.full((h + 1, w + 1), -1, dtype=np.int64)  # row 0 and column 0: "no neighbour"
        for d in range(h + w - 1):
            ys = np.arange(max(0, d - w + 1), min(h, d + 1))
            xs = d - ys
            on = active[ys, xs]
            ys, xs = ys[on], xs[on]
            if not ys.size:
                continue
            experts = self._experts(None if prev is None else prev[ys, xs].astype(np.int64), padded[ys, xs + 1],
                                    padded[ys + 1, xs])
            sym = coder.decode(family, probabilities(self.product(experts), self.model.total))
            out[ys, xs] = sym
            padded[ys + 1, xs + 1] = sym


def coded(grid: np.ndarray) -> np.ndarray:
    """Raster positions of the indices a stage codes: all but the absent (negative) ones."""
    return np.flatnonzero(grid.ravel() >= 0)


@functools.lru_cache(maxsize=8)
def _diagonal_order(h: int, w: int) -> np.ndarray:
    """Raster indices of an [h, w] grid in decoding order: anti-diagonals y + x = 0, 1, ..., each
    top to bottom (every position's up and left neighbours come on an earlier diagonal)."""
    y, x = np.mgrid[:h, :w]
    return np.lexsort((y.ravel(), (y + x).ravel()))


def static_tables(histogram: np.ndarray) -> np.ndarray:
    """[S, K] integer tables from per-stage index counts (every code non-zero)."""
    hist = np.asarray(histogram, dtype=np.int64)
    return quantize(hist, table_total(hist.shape[1]))


def context_tables(counts: np.ndarray, static: np.ndarray, pseudo: int = PSEUDO) -> np.ndarray:
    """[S, K, K] tables: each context row's counts plus `pseudo` counts spread as the static table."""
    total = int(static[0].sum())
    c = np.asarray(counts, dtype=np.int64)
    return quantize(c * total + pseudo * static[:, None, :], total)


def build_model(stats: dict, kind: str = "auto", pseudo: int = PSEUDO) -> EntropyModel:
    """The entropy model for weights' statistics (tensors or arrays).

    kind "auto" takes the strongest model the weights carry the counts of (spatial, context,
    static); "static", "context" and "spatial" ask for one (an error naming what is missing).
    """
    hist = to_numpy(stats["histogram"])
    static = static_tables(hist)
    total = table_total(hist.shape[1])
    if kind == "auto":
        spatial = all(n in stats for n in (CONTEXT_STAT, UP_STAT, LEFT_STAT, EXPERTS_STAT))
        kind = "spatial" if spatial else "context" if CONTEXT_STAT in stats else "static"
    if kind == "static":
        return EntropyModel(static, None, total)
    s, k = hist.shape

    def tables(name: str) -> np.ndarray:
        counts = stats.get(name)
        if counts is None:
            raise VQError(f"the file uses the {kind} entropy model but the weights carry no stats.{name}")
        counts = to_numpy(counts)
        if counts.shape != (s, k, k):
            raise VQError(f"weights' stats.{name} has shape {counts.shape}, expected {(s, k, k)}")
        return context_tables(counts, static, pseudo)

    if kind == "context":
        return EntropyModel(static, tables(CONTEXT_STAT), total)
    experts = stats.get(EXPERTS_STAT)
    if experts is None or to_numpy(experts).shape != (s,) or not ((to_numpy(experts) & ~7) == 0).all():
        raise VQError(f"the file uses the spatial entropy model but the weights' stats.{EXPERTS_STAT} is missing or "
                      f"not [{s}] masks")
    return SpatialModel(static, tables(CONTEXT_STAT), total, tables(UP_STAT), tables(LEFT_STAT),
                        tuple(int(m) for m in to_numpy(experts)))


def default_experts(stages: int) -> np.ndarray:
    """The spatial model's expert masks [S] for weights whose statistics are collected now."""
    return np.array([DEFAULT_EXPERTS[s] if s < len(DEFAULT_EXPERTS) else PREV for s in range(stages)], dtype=np.int32)


def neighbour_counts(indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts [S, K, K] of code b below code a (up) and right of code a (left), every stage, of one
    image's indices [S, h, w]: the spatial model's UP and LEFT experts."""
    idx = np.asarray(indices, dtype=np.int64)
    up = np.stack([np.bincount(g[:-1].ravel() * k + g[1:].ravel(), minlength=k * k) for g in idx])
    left = np.stack([np.bincount(g[:, :-1].ravel() * k + g[:, 1:].ravel(), minlength=k * k) for g in idx])
    return up.reshape(-1, k, k), left.reshape(-1, k, k)


def context_counts(indices: np.ndarray, k: int) -> np.ndarray:
    """Context counts [S, K, K] of one image's indices [S, h, w] (see the module docstring)."""
    idx = np.asarray(indices, dtype=np.int64)
    s = idx.shape[0]
    out = np.zeros((s, k, k), dtype=np.int64)
    up, cur = idx[0, :-1].ravel(), idx[0, 1:].ravel()
    out[0] = np.bincount(up * k + cur, minlength=k * k).reshape(k, k)
    for st in range(1, s):
        out[st] = np.bincount(idx[st - 1].ravel() * k + idx[st].ravel(), minlength=k * k).reshape(k, k)
    return out

