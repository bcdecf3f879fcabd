"""The VQ-VAE: a conv encoder and decoder around a residual vector quantizer.

Images are float tensors in [0, 1], shape [B, 3, H, W] with H and W multiples of the
downsampling factor. The first encoder layer is a pixel-unshuffle (a reshape) and the last
decoder layer a pixel-shuffle, so that no convolution runs at full resolution: on a CPU
that is most of the cost of an autoencoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .quantizer import ResidualVQ


# -- the tensor conventions of images (uint8 arrays <-> model inputs) ---------------------------
def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad [B, C, H, W] on the bottom/right to multiples of factor; returns the padding."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (ph, pw)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [1, 3, H, W] in [0, 1] -> uint8 [H, W, 3] (round half to even, as torch.round)."""
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def constant_response(layers: list[nn.Module], v: torch.Tensor) -> torch.Tensor:
    """What a chain of layers gives at every position of an endless constant input, whose value
    per channel is v [U, C]: a convolution of a constant is its kernel summed over space, so the
    field stays constant through every layer (away from the image's borders) -> [U, C']."""
    for layer in layers:
        if isinstance(layer, nn.PixelUnshuffle):
            v = v.repeat_interleave(layer.downscale_factor ** 2, dim=1)  # channel c -> c * r^2 + offset
        elif isinstance(layer, nn.Conv2d):
            v = F.linear(v, layer.weight.sum((2, 3)), layer.bias)
        elif isinstance(layer, nn.SiLU):
            v = F.silu(v)
        elif isinstance(layer, ResBlock):
            v = v + constant_response([layer.conv2], F.silu(constant_response([layer.conv1], F.silu(v))))
        else:
            raise TypeError(f"constant response of {type(layer).__name__} is unknown")
    return v


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.PixelUnshuffle(cfg.stem), nn.Conv2d(3 * cfg.stem**2, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            layers += [ResBlock(c) for _ in range(cfg.res_blocks)]
            if i + 1 < len(ch):
                layers += [nn.SiLU(), nn.Conv2d(c, ch[i + 1], 4, stride=2, padding=1)]
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def constant(self, v: torch.Tensor) -> torch.Tensor:
        """The latent of an endless field of one input value per row of v [U, 3] -> [U, D]."""
        return constant_response(list(self.net), v)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.channels[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            layers += [ResBlock(c) for _ in range(cfg.res_blocks)]
            if i + 1 < len(ch):
                # Sub-pixel upsampling: conv to 4x channels, then pixel-shuffle (no checkerboard).
                layers += [nn.SiLU(), nn.Conv2d(c, ch[i + 1] * 4, 3, padding=1), nn.PixelShuffle(2)]
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], 3 * cfg.stem**2, 3, padding=1), nn.PixelShuffle(cfg.stem)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass
class VQVAEOutput:
    recon: torch.Tensor  # [B, 3, H, W], unclamped
    indices: torch.Tensor  # [B, S, h, w]
    commit_loss: torch.Tensor
    n_stages: torch.Tensor  # [B, h, w] stages used per position


class VQVAE(nn.Module):
    """Encoder -> residual VQ -> decoder, with an index API for downstream models."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = ResidualVQ(
            cfg.latent_dim, cfg.stages, cfg.codebook_size, cfg.code_dim, cfg.l2_normalize,
            cfg.ema_decay, cfg.ema_eps, cfg.dead_threshold, cfg.quantizer_dropout, cfg.rate_weight,
        )

    @property
    def factor(self) -> int:
        return self.cfg.downsample

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        if images.shape[2] % self.factor or images.shape[3] % self.factor:
            raise ValueError(f"image size {tuple(images.shape[2:])} is not a multiple of {self.factor}")

    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> the encoder's continuous latent [B, D, H/f, W/f]."""
        self._check(images)
        return self.encoder(images * 2 - 1)

    def forward(self, images: torch.Tensor, n_stages: int | None = None) -> VQVAEOutput:
        z = self.latent(images)
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        q = self.quantizer(flat.float(), n_stages)
        zq = q.quantized.to(z.dtype).reshape(b, h, w, d).permute(0, 3, 1, 2)
        recon = (self.decoder(zq) + 1) / 2
        indices = q.indices.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return VQVAEOutput(recon, indices, q.commit_loss, q.n_stages.reshape(b, h, w))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, n_stages: int | None = None) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> indices [B, S, H/f, W/f] (int64)."""
        return self.encode_with_error(images, n_stages)[0]

    @torch.no_grad()
    def encode_with_error(self, images: torch.Tensor, n_stages: int | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices [B, S, H/f, W/f], squared latent distance [B, S, H/f, W/f] of each stage's input
        to its code): what the index statistics of a release are made of."""
        return self.quantize(self.latent(images), n_stages)

    @torch.no_grad()
    def quantize(self, z: torch.Tensor, n_stages: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A latent [B, D, h, w] -> (indices, squared distances) [B, S, h, w], as encode_with_error."""
        b, d, h, w = z.shape
        idx, err = self.quantizer.encode_with_error(z.permute(0, 2, 3, 1).reshape(-1, d).float(), n_stages)
        return tuple(t.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous() for t in (idx, err))

    def latent_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, S', h, w] -> quantized latent [B, D, h, w] (sum over the given stages)."""
        if indices.ndim != 4:
            raise ValueError(f"expected indices [B, S, h, w], got {tuple(indices.shape)}")
        return self.quantizer.decode(indices.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    @torch.no_grad()
    def flat_latent(self, colours: torch.Tensor) -> torch.Tensor:
        """uint8 colours [U, 3] -> the encoder's latent [U, D] inside an endless field of each colour
        (what a flat cell stands for in the decoder's input: vqcli.flatcells)."""
        weight = self.encoder.net[1].weight
        return self.encoder.constant((colours.to(weight.device).float() / 255.0) * 2 - 1)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, S', h, w] (any prefix of the stages) -> images [B, 3, h*f, w*f] in [0, 1]."""
        return self.decode_latent(self.latent_from_indices(indices))

    @torch.no_grad()
    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """A latent [B, D, h, w] -> images [B, 3, h*f, w*f] in [0, 1]."""
        return ((self.decoder(z) + 1) / 2).clamp(0, 1)

    def embed(self, indices: torch.Tensor, stages: int | None = None) -> torch.Tensor:
        """Token embeddings for downstream models: indices [B, S, h, w] -> [B, h*w, D].

        Sums the code vectors of the first `stages` stages (all by default) at every position,
        in raster order.
        """
        z = self.latent_from_indices(indices[:, : stages or indices.shape[1]])
        return z.flatten(2).transpose(1, 2)
