"""Flat cells: latent cells whose f x f pixels all hold one colour, coded as that colour.

A learned decoder does not give a flat colour back flat: the shipped models were trained on
photos, which hold almost no saturated flat patches, and a flat white came back at 248..254 in
green (a magenta tint), a 1x1 image 48 levels off. Nor are flat regions cheap as indices: every
index of the spatial entropy model costs at least about one bit, so a flat 4000x3000 image cost
70 KB. A format-3 file therefore lists such cells with their colour and the decoder paints them
exactly. Inside a flat region (FlatCells.uncoded) they hold no indices at all, and the network
sees, at their place, the latent its encoder gives an endless field of that colour
(model.VQVAE.flat_latent), so that coded neighbours decode as beside any flat region.

A cell is flat when every pixel of it in the replicate-padded image (as the encoder sees it:
vqcli.model.pad_to_multiple) is the same RGB triple, so a 1x1 image is one flat cell.

The chunk (docs/FORMAT.md): zlib of the flatness mask, one bit per cell in raster order
(numpy.packbits, most significant bit first, the last byte zero-padded), then the colours of the
flat cells in raster order as three planes (R, G, B), each value the difference to the previous
flat cell's (mod 256; the first to 0): a flat region is a run of zeros, which zlib folds away.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import VQError

BAND = 64  # cell rows tested at a time (bounds the temporary arrays of a large image)


@dataclass
class FlatCells:
    mask: np.ndarray  # bool [h, w]: the flat cells of the latent grid
    colours: np.ndarray  # uint8 [m, 3]: their colours, raster order (m = mask.sum())

    @property
    def count(self) -> int:
        return int(self.colours.shape[0])

    @functools.cached_property
    def uncoded(self) -> np.ndarray:
        """bool [h, w]: the flat cells whose eight neighbours are flat too (outside the grid counts
        as flat). They hold no indices; a flat cell at the edge of a flat region keeps its indices
        (and is painted all the same), so that a coded cell's neighbours decode from their own
        latents: without that ring, val photos lost 0.004 dB on average, one 0.12 dB."""
        h, w = self.mask.shape
        ring = np.pad(self.mask, 1, constant_values=True)
        out = self.mask.copy()
        for dy in range(3):
            for dx in range(3):
                out &= ring[dy:dy + h, dx:dx + w]
        return out

    def palette(self) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct colours uint8 [u, 3] of the uncoded cells, each cell's index into them
        int64 [h, w], -1 where a cell is coded)."""
        keep = self.uncoded[self.mask]
        colours, inverse = np.unique(self.colours[keep], axis=0, return_inverse=True)
        ids = np.full(self.mask.shape, -1, dtype=np.int64)
        ids[self.uncoded] = inverse.reshape(-1)
        return colours, ids

    def paint(self, rgb: np.ndarray, factor: int) -> None:
        """Write every flat cell's colour into rgb uint8 [H, W, 3] (the cropped image), in place."""
        if not self.count:
            return
        height, width = rgb.shape[:2]
        colour = np.zeros((*self.mask.shape, 3), dtype=np.uint8)
        colour[self.mask] = self.colours
        # whole cells through a [h, f, w, f, 3] view, only the flat ones touched; then the cells
        # the crop cuts at the bottom and right edge, one by one (at most h + w of them)
        fh, fw = height // factor, width // factor
        cells = rgb[:fh * factor, :fw * factor].reshape(fh, factor, fw, factor, 3)
        ys, xs = np.nonzero(self.mask[:fh, :fw])
        cells[ys, :, xs] = colour[ys, xs][:, None, None]
        edge = self.mask.copy()
        edge[:fh, :fw] = False
        for y, x in zip(*np.nonzero(edge)):
            rgb[y * factor:(y + 1) * factor, x * factor:(x + 1) * factor] = colour[y, x]


def none(grid: tuple[int, int]) -> FlatCells:
    """No flat cells on a grid (h, w)."""
    return FlatCells(np.zeros(grid, dtype=bool), np.zeros((0, 3), dtype=np.uint8))


def find(rgb: np.ndarray, factor: int) -> FlatCells:
    """The flat cells of uint8 [H, W, 3], replicate-padded to the grid of `factor`."""
    height, width = rgb.shape[:2]
    h, w = -(-height // factor), -(-width // factor)
    mask = np.zeros((h, w), dtype=bool)
    for y0 in range(0, h, BAND):
        y1 = min(h, y0 + BAND)
        rows = np.minimum(np.arange(y0 * factor, y1 * factor), height - 1)  # replicate padding
        cols = np.minimum(np.arange(w * factor), width - 1)
        cells = rgb[rows][:, cols].reshape(y1 - y0, factor, w, factor, 3)
        mask[y0:y1] = (cells == cells[:, :1, :, :1]).all(axis=(1, 3, 4))
    ys, xs = np.nonzero(mask)
    colours = rgb[np.minimum(ys * factor, height - 1), np.minimum(xs * factor, width - 1)]
    return FlatCells(mask, np.ascontiguousarray(colours, dtype=np.uint8))


def encode(flat: FlatCells) -> bytes:
    """The flat-cell chunk's payload."""
    planes = np.diff(flat.colours.astype(np.int16), axis=0, prepend=0).astype(np.uint8).T
    return zlib.compress(np.packbits(flat.mask.ravel()).tobytes() + planes.tobytes(), 9)


def max_payload(grid: tuple[int, int]) -> int:
    """zlib's worst case for the chunk of a grid (every cell flat), with margin."""
    n = -(-grid[0] * grid[1] // 8) + 3 * grid[0] * grid[1]
    return n + n // 1000 + 1024


def decode(payload: bytes, grid: tuple[int, int], name: str = "<input>") -> FlatCells:
    """Inverse of encode, bounded: the mask is inflated to exactly its size before the colours
    it announces, and the stream must end there."""
    h, w = grid
    mask_bytes = -(-h * w // 8)
    d = zlib.decompressobj()
    try:
        packed = d.decompress(payload, mask_bytes)
        if len(packed) != mask_bytes:
            raise VQError(f"{name}: corrupt flat-cell chunk (its mask does not cover {w}x{h} cells)")
        bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))
        if bits[h * w:].any():
            raise VQError(f"{name}: corrupt flat-cell chunk (bits set beyond the grid)")
        mask = bits[:h * w].reshape(h, w).astype(bool)
        m = int(mask.sum())
        raw = d.decompress(d.unconsumed_tail, 3 * m) if m else b""
        extra = d.decompress(d.unconsumed_tail, 1)
    except zlib.error as e:
        raise VQError(f"{name}: corrupt flat-cell chunk ({e})") from None
    if len(raw) != 3 * m or extra or not d.eof or d.unused_data:
        raise VQError(f"{name}: corrupt flat-cell chunk (does not hold the colours of its {m} cells)")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(3, m)
    colours = np.cumsum(planes.T.astype(np.int64), axis=0) % 256
    return FlatCells(mask, colours.astype(np.uint8))
