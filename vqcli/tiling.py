"""Tiled encode and decode: the latent grid is processed in tiles, each run through the network
with a halo of neighbouring latent cells at least as wide as the network's receptive field, and
only the tile's core is kept. The result therefore equals whole-image coding up to float
summation order (convolutions over a different extent may sum in another order): decoded pixels
differ by at most one level, and encoder indices only where two codes are at a float near-tie.
Tiling is an implementation detail: the .vqz bytes do not record it.

Memory stays bounded by the tile: pixels are converted to float one tile at a time, and the
decoder writes each tile's core straight into the uint8 output. An out-of-memory error (CUDA)
halves the tile and retries, down to MIN_TILE.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import ModelConfig
from .errors import VQError

TILE_CPU = 128
"""Core tile side in latent cells on CPU (1024 px at f8). Measured per pixel on 2 cores (shipped
model): 64 is slower from the halo, 128 to 256 are on par, and larger tiles cost memory."""
TILE_CUDA = 512
"""Core tile side in latent cells on CUDA: the GPU wants big tiles; an OOM halves them."""
MIN_TILE = 16
_OOM: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


@dataclass(frozen=True)
class ReceptiveField:
    """How far the network looks, in pixels around a latent cell's own f x f pixels (encoder)
    and in latent cells around the cell of a decoded pixel (decoder)."""

    encoder_px: tuple[int, int]  # (before, after): input pixels a latent cell depends on beyond its own
    decoder_cells: tuple[int, int]  # (before, after): latent cells a decoded pixel depends on beyond its own
    factor: int

    @property
    def encoder_halo(self) -> int:
        """Latent cells of halo the encoder needs around a tile."""
        return math.ceil(max(self.encoder_px) / self.factor)

    @property
    def decoder_halo(self) -> int:
        """Latent cells of halo the decoder needs around a tile."""
        return max(self.decoder_cells)


def _span(layers: list[nn.Module], lo: int, hi: int) -> tuple[int, int]:
    """Input interval [lo, hi] (1-D, one axis) that output interval [lo, hi] of the layer chain reads."""
    for layer in reversed(layers):
        if isinstance(layer, nn.Conv2d):
            k, s, p, d = layer.kernel_size[0], layer.stride[0], layer.padding[0], layer.dilation[0]
            lo, hi = lo * s - p, hi * s - p + d * (k - 1)
        elif isinstance(layer, nn.PixelUnshuffle):
            f = layer.downscale_factor
            lo, hi = lo * f, hi * f + f - 1
        elif isinstance(layer, nn.PixelShuffle):
            f = layer.upscale_factor
            lo, hi = lo // f, hi // f
        elif isinstance(layer, nn.Sequential):
            lo, hi = _span(list(layer), lo, hi)
        elif isinstance(layer, (nn.SiLU, nn.Identity, nn.ReLU, nn.GELU)):
            pass
        elif hasattr(layer, "conv1") and hasattr(layer, "conv2"):  # model.ResBlock: x + conv2(conv1(x))
            lo, hi = _span([layer.conv1, layer.conv2], lo, hi)
        else:
            raise TypeError(f"receptive field of {type(layer).__name__} is unknown")
    return lo, hi


@functools.cache
def receptive_field(cfg: ModelConfig) -> ReceptiveField:
    """The receptive field of the model a config builds (layers walked on the meta device)."""
    from .model import Decoder, Encoder

    with torch.device("meta"):
        enc, dec = Encoder(cfg), Decoder(cfg)
    f = cfg.downsample
    lo, hi = _span(list(enc.net), 0, 0)  # the pixels latent cell 0 reads
    enc_px = (-lo, hi - (f - 1))
    lo, hi = _span(list(dec.net), 0, f - 1)  # the cells the pixels of latent cell 0 read
    return ReceptiveField(enc_px, (-lo, hi), f)


# -- tile plans -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tile:
    core: tuple[int, int, int, int]  # y0, y1, x0, x1 in latent cells: what this tile contributes
    full: tuple[int, int, int, int]  # the core with its halo, clipped to the grid: what the network sees


def plan(h: int, w: int, tile: int, halo: int) -> list[Tile]:
    """Tiles covering an h x w latent grid: cores of at most tile x tile cells, split evenly."""
    def cuts(n: int) -> list[tuple[int, int]]:
        k = max(1, math.ceil(n / tile))
        edges = [round(i * n / k) for i in range(k + 1)]
        return list(zip(edges[:-1], edges[1:]))

    return [Tile((y0, y1, x0, x1), (max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)))
            for y0, y1 in cuts(h) for x0, x1 in cuts(w)]


def default_tile(device: torch.device) -> int:
    """Core tile side (latent cells) for a device."""
    return TILE_CUDA if device.type == "cuda" else TILE_CPU


def _with_fallback(h: int, w: int, tile: int, halo: int, run: Callable[[Tile], None],
                   progress: Callable[[float], None] | None = None) -> None:
    """Run every tile of a plan; on out-of-memory restart the plan with tiles half as big (cores
    already written are simply written again)."""
    while True:
        tiles = plan(h, w, tile, halo)
        try:
            for i, t in enumerate(tiles):
                run(t)
                if progress is not None:
                    progress((i + 1) / len(tiles))
            return
        except _OOM:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tile <= MIN_TILE:
                raise VQError(f"out of memory even with {tile}x{tile} latent tiles") from None
            tile = max(MIN_TILE, tile // 2)


# -- encode / decode --------------------------------------------------------------------------------
@dataclass
class Encoded:
    """What tiled encoding gives: greedy indices, and on request each stage's residual and the latent."""

    indices: torch.Tensor  # int64 [S, h, w]
    errors: torch.Tensor | None = None  # float32 [S, h, w]: squared latent residual after each stage
    latent: torch.Tensor | None = None  # float32 [h, w, D]: the encoder's output, for a search (codec)


@torch.no_grad()
def encode(model, rgb: np.ndarray, tile: int | None = None, progress: Callable[[float], None] | None = None,
           errors: bool = False, latent: bool = False) -> Encoded:
    """uint8 [H, W, 3] -> greedy indices of every stage on the latent grid [ceil(H/f), ceil(W/f)]
    (bottom/right replicate-padded), tile by tile; with errors / latent, those too (Encoded)."""
    from .model import pad_to_multiple, to_tensor

    cfg: ModelConfig = model.cfg
    device = next(model.parameters()).device
    f = cfg.downsample
    height, width = rgb.shape[:2]
    h, w = -(-height // f), -(-width // f)
    res = Encoded(torch.empty((cfg.stages, h, w), dtype=torch.int64),
                  torch.empty((cfg.stages, h, w), dtype=torch.float32) if errors else None,
                  torch.empty((h, w, cfg.latent_dim), dtype=torch.float32) if latent else None)
    halo = receptive_field(cfg).encoder_halo

    def run(t: Tile) -> None:
        a0, a1, b0, b1 = t.full
        y0, y1, x0, x1 = t.core
        x = to_tensor(rgb[a0 * f:min(height, a1 * f), b0 * f:min(width, b1 * f)]).to(device)
        x, _ = pad_to_multiple(x, f)  # only a tile on the bottom/right edge needs it: same rows as untiled
        z = model.latent(x)[..., y0 - a0:y1 - a0, x0 - b0:x1 - b0]  # the halo is not quantized
        idx, e = model.quantize(z)
        res.indices[:, y0:y1, x0:x1] = idx[0].cpu()
        if res.errors is not None:
            res.errors[:, y0:y1, x0:x1] = e[0].cpu()
        if res.latent is not None:
            res.latent[y0:y1, x0:x1] = z[0].permute(1, 2, 0).float().cpu()

    _with_fallback(h, w, tile or default_tile(device), halo, run, progress)
    return res


@torch.no_grad()
def decode(model, indices: torch.Tensor, width: int, height: int, tile: int | None = None,
           progress: Callable[[float], None] | None = None,
           fill: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """int64 [s, h, w] (any prefix of the stages) -> uint8 [height, width, 3], tile by tile.

    fill: (ids int64 [h, w], latents [U, D]): where ids >= 0 the decoder's input is latents[id]
    instead of the indices' sum (flat cells, vqcli.flatcells)."""
    from .model import to_uint8

    cfg: ModelConfig = model.cfg
    device = next(model.parameters()).device
    f = cfg.downsample
    _, h, w = indices.shape
    out = np.empty((height, width, 3), dtype=np.uint8)
    halo = receptive_field(cfg).decoder_halo
    idx = torch.as_tensor(indices).long()

    def run(t: Tile) -> None:
        a0, a1, b0, b1 = t.full
        y0, y1, x0, x1 = t.core
        z = model.latent_from_indices(idx[None, :, a0:a1, b0:b1].to(device))
        if fill is not None:
            ids = fill[0][a0:a1, b0:b1].to(device)
            where = ids >= 0
            z[0][:, where] = fill[1][ids[where]].T.to(z.dtype)
        x = model.decode_latent(z)
        py0, py1 = y0 * f, min(height, y1 * f)
        px0, px1 = x0 * f, min(width, x1 * f)
        if py1 > py0 and px1 > px0:
            out[py0:py1, px0:px1] = to_uint8(x[..., py0 - a0 * f:py1 - a0 * f, px0 - b0 * f:px1 - b0 * f])

    _with_fallback(h, w, tile or default_tile(device), halo, run, progress)
    return out


# -- the enhancement layer (vqcli.enhance), in pixel tiles ------------------------------------------
ENH_TILE_CPU = 512
"""Core tile side in pixels for the enhancement on CPU."""
ENH_TILE_CUDA = 2048


@functools.cache
def enhancement_halo(cfg) -> int:
    """Pixels of halo (a multiple of 8) around a tile that the enhancement's analysis and synthesis
    need, both walked through the base features they read."""
    from .enhance import FACTOR, Enhancement

    with torch.device("meta"):
        net = Enhancement(cfg)

    def feats_px(lo: int, hi: int) -> tuple[int, int]:  # the pixels features at cells lo..hi (and their mean) read
        mlo, mhi = _span(list(net.mean), lo, hi)
        return _span(list(net.context), min(lo, mlo), max(hi, mhi))

    lo, hi = _span(list(net.synthesis), 0, FACTOR - 1)  # cells the pixels of cell 0 read
    dlo, dhi = feats_px(lo, hi)
    alo, ahi = _span(list(net.analysis), 0, 0)
    elo, ehi = feats_px(0, 0)
    halo = max(-dlo, dhi - (FACTOR - 1), -alo, ahi - (FACTOR - 1), -elo, ehi - (FACTOR - 1), lo * -FACTOR,
               hi * FACTOR)
    return -(-halo // 8) * 8


def _pixel_plan(height: int, width: int, tile: int, halo: int) -> list[Tile]:
    """Pixel tiles (cores on 8-pixel boundaries) of a padded height x width image."""
    return [Tile(tuple(8 * v for v in t.core), tuple(8 * v for v in t.full))
            for t in plan(height // 8, width // 8, tile // 8, halo // 8)]


def _padded_crop(img: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """img[y0:y1, x0:x1] of the image replicate-padded at the bottom and right."""
    h, w = img.shape[:2]
    crop = img[y0:min(y1, h), x0:min(x1, w)]
    return np.pad(crop, ((0, y1 - min(y1, h)), (0, x1 - min(x1, w)), (0, 0)), mode="edge")


@torch.no_grad()
def enhance_encode(net, rgb: np.ndarray, base: np.ndarray, steps: torch.Tensor, grid: tuple[int, int],
                   tile: int | None = None, deadzone: float = 0.0) -> np.ndarray:
    """The enhancement symbols (int8 [C, gh, gw], net.quantize with the dead zone) of an image
    uint8 [H, W, 3] over its base reconstruction (same shape), on the latent grid of the image
    replicate-padded to gh x gw cells of vqcli.enhance.FACTOR pixels."""
    from .enhance import FACTOR
    from .model import to_tensor

    device = next(net.parameters()).device
    out = np.empty((net.cfg.channels, *grid), dtype=np.int8)
    steps = steps.to(device)
    for t in _pixel_plan(grid[0] * FACTOR, grid[1] * FACTOR, tile or _enh_tile(device), enhancement_halo(net.cfg)):
        a0, a1, b0, b1 = t.full
        y0, y1, x0, x1 = t.core
        x = to_tensor(_padded_crop(rgb, a0, a1, b0, b1)).to(device)
        b = to_tensor(_padded_crop(base, a0, a1, b0, b1)).to(device)
        q = net.quantize(net.analyse(x, b, net.features(b), steps), deadzone)
        f = FACTOR
        core = q[0, :, (y0 - a0) // f:(y1 - a0) // f, (x0 - b0) // f:(x1 - b0) // f]
        out[:, y0 // f:y1 // f, x0 // f:x1 // f] = core.to(torch.int8).cpu().numpy()
    return out


@torch.no_grad()
def enhance_decode(net, sym: np.ndarray, base: np.ndarray, steps: torch.Tensor, tile: int | None = None) -> np.ndarray:
    """The enhanced image uint8 [H, W, 3] from symbols int8 [C, gh, gw] and the base uint8 [H, W, 3]."""
    from .enhance import FACTOR
    from .model import to_tensor, to_uint8

    device = next(net.parameters()).device
    height, width = base.shape[:2]
    out = np.empty_like(base)
    steps = steps.to(device)
    f = FACTOR
    for t in _pixel_plan(sym.shape[1] * f, sym.shape[2] * f, tile or _enh_tile(device), enhancement_halo(net.cfg)):
        a0, a1, b0, b1 = t.full
        y0, y1, x0, x1 = t.core
        b = to_tensor(_padded_crop(base, a0, a1, b0, b1)).to(device)
        q = torch.from_numpy(sym[:, a0 // f:a1 // f, b0 // f:b1 // f].astype(np.float32))[None].to(device)
        x = net.synthesise(q, b, net.features(b), steps)
        py1, px1 = min(height, y1), min(width, x1)
        if py1 > y0 and px1 > x0:
            out[y0:py1, x0:px1] = to_uint8(x[..., y0 - a0:py1 - a0, x0 - b0:px1 - b0])
    return out


def _enh_tile(device: torch.device) -> int:
    return ENH_TILE_CUDA if device.type == "cuda" else ENH_TILE_CPU
