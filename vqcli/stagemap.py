"""Adaptive rate: each block of latent cells keeps its own number of RVQ stages.

Quantizer dropout trained the decoder on latents in which every position keeps its own prefix of
the stages, so a file may give each block of BLOCK x BLOCK latent cells (16 x 16 pixels at f8)
its own stage count: a flat sky keeps one or two stages, foliage keeps nine. The encoder picks,
per block, the count n that minimises w D(n) + lambda * R(n): D is the squared latent residual
the greedy RVQ leaves after n stages (the quantizer's own error, so no decoder pass is needed)
and R the bits of the block's first n indices under the entropy model's stage-to-stage tables.

Both are relative to the image. lambda is the quality's (see lam) times the image's mean
residual after REF_STAGE stages, so that a quality buys the same decibels per bit in every
image: with one absolute lambda, busy photos took the bits (much squared error removed, few
decibels) and the mean PSNR over a set of photos gained nothing (BD-rate -2 % against uniform
stages on training photos, -12 % relative). And w = (the block's residual after REF_STAGE
stages / the image's mean) ^ -FLATNESS weights flat blocks up, whose errors MS-SSIM and the eye
see most (on training photos: MS-SSIM BD-rate +3.5 % against uniform stages instead of +7.3 %,
PSNR unchanged; an exponent of 0.5 gave +1.8 % but lost 2.5 points of PSNR).

Measured with the shipped model by `vq eval` (its vq-stages row: the same model without a stage
map): BD-rate -13.5 % (PSNR) and +8.5 % (MS-SSIM) on val. With that model on 14 training
photos, this weight gives -12.0 % / +2.8 % against uniform stages; weighting blocks by their
pixel variance instead (MSE / (sigma^2 + C2), as SSIM-tuned encoders do) did worse: exponent 0.5
gave -5.7 % / +0.2 %, exponent 1 +17.9 % / +8.6 %. On 8 training photos, blocks of 2x2 cells did
better than 1x1 (more bits on the map than saved on indices) and 4x4 (coarser choices): at
29.5 dB, 0.547 bpp against 0.556 and about 0.565.

The map, one chunk of a format-2 file (vqcli.format): u8 block side, one u16 probability per
stage boundary, then an ANS stream of one flag per block and stage boundary s ("does this block
keep stage s + 1?") for the blocks that kept stage s, raster order, stage by stage. A
probability q codes flags as p(1) = q / 65536; q = 0 means no block continues and q = 65535
every block (no flags coded). Integer tables only, as everywhere in the coder.
"""

from __future__ import annotations

import struct

import numpy as np

from .errors import VQError

BLOCK = 2  # block side in latent cells
REF_STAGE = 4  # lambda and the block weights are relative to the residual after this many stages
FLATNESS = 0.25  # exponent of the block weights
MAX_BLOCK = 64
ONE = 1 << 16  # probability scale of the flags
NONE, ALL = 0, ONE - 1  # the two probabilities that code no flags
def lam(quality: float) -> float:
    """The Lagrange multiplier of a quality in 0..100, in units of the image's mean residual per
    bit: from 10^-0.2 (quality 0: one stage nearly everywhere, about 0.09 bpp with the shipped
    model) to 10^-2.8 (quality 100: nearly every stage everywhere, about 1.25 bpp)."""
    return 10.0 ** (-0.2 - 2.6 * quality / 100)


def _block_sums(a: np.ndarray, block: int) -> np.ndarray:
    """[S, h, w] -> [S, ceil(h/block), ceil(w/block)] sums (edge blocks sum what they hold)."""
    s, h, w = a.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((s, hb * block, wb * block))
    padded[:, :h, :w] = a
    return padded.reshape(s, hb, block, wb, block).sum((2, 4))


def _weighting(err: np.ndarray, block: int, skip: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(scale, w [hb, wb]): the image's mean residual after REF_STAGE stages over the cells not
    skipped, and each block's weight on its squared error (ones for an image without residual);
    err [S, h, w], skip bool [h, w] (flat cells, which hold no indices: vqcli.flatcells)."""
    ref = np.asarray(err[min(REF_STAGE, len(err)) - 1], dtype=np.float64)
    if skip is not None:
        ref = np.where(skip, 0.0, ref)
    kept = ref.size if skip is None else int(ref.size - skip.sum())
    scale = float(ref.sum() / kept) if kept else 0.0
    cells = _block_sums(np.ones((1, *ref.shape)), block)[0]
    if not scale > 0:
        return scale, np.ones_like(cells)
    flat = _block_sums(ref[None], block)[0] / (cells * scale)
    return scale, np.maximum(flat, 1e-3) ** -FLATNESS


def block_max(per_position: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Per-position counts [h, w] -> each block's largest [ceil(h/block), ceil(w/block)]."""
    h, w = per_position.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((hb * block, wb * block), dtype=np.int64)
    padded[:h, :w] = per_position
    return padded.reshape(hb, block, wb, block).max((1, 3))


def choose(err: np.ndarray, bits: np.ndarray, lam_: float, block: int = BLOCK,
           skip: np.ndarray | None = None) -> np.ndarray:
    """Stage count [hb, wb] in 1..S per block minimising w D + lam * scale * R (see the module
    docstring; scale: the image's mean residual after REF_STAGE stages), or one count everywhere
    when that costs less than the best map and the map's own bits.

    err: [S, h, w] squared latent residual after each stage; bits: [S, h, w] each index's cost;
    skip: bool [h, w], cells that count for nothing (flat cells: no indices; a block of them keeps 1)."""
    err = np.asarray(err, dtype=np.float64)
    bits = np.asarray(bits, dtype=np.float64)
    if skip is not None:
        err, bits = np.where(skip, 0.0, err), np.where(skip, 0.0, bits)
    scale, w = _weighting(err, block, skip)
    d = _block_sums(err, block) * w
    r = np.cumsum(_block_sums(bits, block), 0)
    cost = d + lam_ * scale * r
    counts = cost.argmin(0).astype(np.int64) + 1
    if counts.min() == counts.max():
        return counts
    # The map costs bits of its own, and a file keeping n stages everywhere holds none: on a small
    # image the map can cost more than it saves (a 32x48 image's quality 0 outweighed its 100).
    mapped = float(np.take_along_axis(cost, counts[None] - 1, 0).sum()) + lam_ * scale * 8 * len(encode(counts, block))
    uniform = cost.sum((1, 2))
    n = int(uniform.argmin())
    return np.full_like(counts, n + 1) if uniform[n] <= mapped else counts


def price(err: np.ndarray, lam_: float, block: int = BLOCK, skip: np.ndarray | None = None) -> np.ndarray:
    """What a bit is worth in squared latent error at each position [h, w]: the trade choose()
    makes, lam * scale / w, for a search that picks codes within a block's stages (vqcli.codec)."""
    scale, w = _weighting(err, block, skip)
    return expand(lam_ * scale / w, np.shape(err)[1:], block)


def expand(counts: np.ndarray, shape: tuple[int, int], block: int = BLOCK) -> np.ndarray:
    """Per-block counts [hb, wb] -> per-position counts [h, w]."""
    h, w = shape
    return np.repeat(np.repeat(counts, block, 0), block, 1)[:h, :w]


def apply(indices: np.ndarray, per_position: np.ndarray) -> np.ndarray:
    """A copy of indices [s, h, w] with -1 (absent) where a position keeps fewer stages."""
    out = np.array(indices, dtype=np.int64, copy=True)
    out[np.arange(out.shape[0])[:, None, None] >= per_position[None]] = -1
    return out


def _probability(flags: np.ndarray) -> int:
    if not flags.any():
        return NONE
    if flags.all():
        return ALL
    return int(min(max(round(flags.mean() * ONE), 1), ALL - 1))


def _family_probs(q: int, n: int) -> np.ndarray:
    return np.broadcast_to(np.array([(ONE - q) / ONE, q / ONE]), (n, 2)).copy()


def encode(counts: np.ndarray, block: int = BLOCK) -> bytes:
    """The map chunk's payload for per-block counts [hb, wb] (1..stages, stages = counts.max())."""
    import constriction

    counts = np.asarray(counts, dtype=np.int64)
    stages = int(counts.max())
    if counts.min() < 1 or not 1 <= block <= MAX_BLOCK:
        raise ValueError("stage counts must be at least 1 and the block 1..64")
    qs, symbols, probs = [], [], []
    for s in range(1, stages):
        flags = counts[counts >= s] > s  # raster order
        q = _probability(flags)
        qs.append(q)
        if q not in (NONE, ALL):
            symbols.append(flags.astype(np.int32))
            probs.append(_family_probs(q, flags.size))
    coder = constriction.stream.stack.AnsCoder()
    if symbols:
        coder.encode_reverse(np.concatenate(symbols), constriction.stream.model.Categorical(perfect=False),
                             np.concatenate(probs))
    head = struct.pack(f"<B{len(qs)}H", block, *qs)
    return head + coder.get_compressed().astype("<u4").tobytes()


def decode(payload: bytes, grid: tuple[int, int], stages: int, name: str = "<input>") -> tuple[np.ndarray, int]:
    """Inverse of encode -> (counts [hb, wb] in 1..stages, block side); every stage up to `stages`
    must be reached by some block, and the stream must be consumed exactly."""
    import constriction

    if len(payload) < 1 + 2 * (stages - 1):
        raise VQError(f"{name}: corrupt stage map (length {len(payload)})")
    block = payload[0]
    if not 1 <= block <= MAX_BLOCK:
        raise VQError(f"{name}: corrupt stage map (block side {block})")
    qs = struct.unpack_from(f"<{stages - 1}H", payload, 1)
    words = payload[1 + 2 * (stages - 1):]
    if len(words) % 4:
        raise VQError(f"{name}: corrupt stage map (its stream is not whole words)")
    hb, wb = -(-grid[0] // block), -(-grid[1] // block)
    counts = np.ones((hb, wb), dtype=np.int64)
    family = constriction.stream.model.Categorical(perfect=False)
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        for s, q in enumerate(qs, start=1):
            alive = np.flatnonzero(counts.ravel() >= s)
            if q == ALL:
                flags = np.ones(alive.size, dtype=bool)
            elif q == NONE:
                flags = np.zeros(alive.size, dtype=bool)
            else:
                flags = coder.decode(family, _family_probs(q, alive.size)).astype(bool) if alive.size else \
                    np.zeros(0, dtype=bool)
            counts.ravel()[alive[flags]] = s + 1
        unfinished = not coder.is_empty()
    except (ValueError, RuntimeError, AssertionError) as e:
        raise VQError(f"{name}: corrupt stage map ({e})") from None
    if unfinished:
        raise VQError(f"{name}: corrupt stage map (surplus or missing words)")
    if int(counts.max()) != stages:
        raise VQError(f"{name}: corrupt stage map (no block keeps all {stages} stages the header announces)")
    return counts, block
