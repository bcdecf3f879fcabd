"""Residual vector quantizer with EMA codebooks, k-means init and dead-code restarts.

Codebooks are learned by exponential moving averages of the vectors assigned to each code
(VQ-VAE-2 / SoundStream style), not by gradients. With a rate weight, assignment is
entropy-constrained (ECVQ, Chou, Lookabaugh & Gray 1989): each code costs its squared distance
plus a price per bit of its code length, so that training and encoding trade distortion for rate.
Under torch.distributed every statistic is all-reduced and every random choice is made on rank 0
and broadcast, so all ranks keep bit-identical codebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if _dist_on():
        dist.all_reduce(t)
    return t


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    if _dist_on():
        dist.broadcast(t, src=0)
    return t


def _gather_vectors(x: torch.Tensor) -> torch.Tensor:
    """All ranks' vectors (same count on each rank under DDP, since batches are equal)."""
    if not _dist_on():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def squared_distances(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """||x - c||^2 for every pair, as one matmul: [N, d] x [K, d] -> [N, K]."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ codes.t() + codes.pow(2).sum(1)[None, :])


def nearest_code(x: torch.Tensor, codes: torch.Tensor, chunk: int = 4096, cost: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Index of the nearest code for each row of x, in chunks of rows; `cost` [K], if given, is
    added to every distance to its code (the rate price of entropy-constrained assignment).

    The chunk keeps the [chunk, K] distance matrix in cache (4 MB at K = 256): with 65536 rows,
    quantizing a 1024 px tile took 2.3x as long, the matrices streaming through memory."""
    def pick(rows: torch.Tensor) -> torch.Tensor:
        d = squared_distances(rows, codes)
        return (d if cost is None else d + cost).argmin(1)

    out = [pick(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def code_bits(counts: torch.Tensor, eps: float) -> torch.Tensor:
    """Code lengths in bits, -log2 p, of codes used `counts` times (Laplace-smoothed by eps)."""
    c = counts.double() + eps
    return torch.log2(c.sum() / c).to(counts.dtype)


def kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain Lloyd k-means; empty clusters keep their previous centre."""
    n = x.shape[0]
    idx = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    if n < k:  # too few vectors: repeat them (with noise so that codes differ)
        idx = torch.randint(0, n, (k,), generator=generator, device="cpu").to(x.device)
    centres = x[idx].clone()
    if n < k:
        centres += 1e-3 * x.std() * torch.randn(centres.shape, generator=generator).to(x.device)
    for _ in range(iters):
        assign = nearest_code(x, centres)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


RATE_BUFFERS = ("rate_cost", "ema_distortion")  # what a rate-aware stage holds beyond a plain one


@dataclass
class StageOutput:
    quantized: torch.Tensor  # [N, D], the stage's contribution in latent space
    indices: torch.Tensor  # [N]
    commit_loss: torch.Tensor  # scalar


class VectorQuantizer(nn.Module):
    """One RVQ stage: K codes, optionally looked up in a factorised (and l2-normalised) space."""

    def __init__(self, dim: int, codebook_size: int, code_dim: int | None = None, l2_normalize: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, dead_threshold: float = 1.0, rate_weight: float = 0.0) -> None:
        super().__init__()
        self.dim, self.codebook_size, self.rate_weight = dim, codebook_size, rate_weight
        self.code_dim = code_dim or dim
        self.l2_normalize = l2_normalize
        self.decay, self.eps, self.dead_threshold = decay, eps, dead_threshold
        self.factorised = code_dim is not None
        if self.factorised:
            self.proj_in = nn.Linear(dim, self.code_dim)
            self.proj_out = nn.Linear(self.code_dim, dim)
        self.register_buffer("codebook", torch.zeros(codebook_size, self.code_dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, self.code_dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        if rate_weight > 0:
            # Only rate-aware stages have these, so that every other model's tensors (and model
            # ids) stay as they were. rate_cost is stored in releases: encoding adds it.
            self.register_buffer("rate_cost", torch.zeros(codebook_size))
            self.register_buffer("ema_distortion", torch.zeros(()))

    # -- lookup ---------------------------------------------------------------------------
    def _to_code_space(self, x: torch.Tensor) -> torch.Tensor:
        if self.factorised:
            x = self.proj_in(x)
        if self.l2_normalize:
            x = F.normalize(x, dim=-1)
        return x

    def _codes(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1) if self.l2_normalize else self.codebook

    def _from_code_space(self, c: torch.Tensor) -> torch.Tensor:
        return self.proj_out(c) if self.factorised else c

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Latent-space vectors [.., D] for code indices [..]."""
        return self._from_code_space(F.embedding(indices, self._codes()))

    def _cost(self) -> torch.Tensor | None:
        return self.rate_cost.float() if self.rate_weight > 0 else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Indices of the cheapest codes (nearest, plus the rate price if any) for latent vectors x [N, D]."""
        return nearest_code(self._to_code_space(x).float(), self._codes().float(), cost=self._cost())

    # -- training -------------------------------------------------------------------------
    @torch.no_grad()
    def _init(self, xe: torch.Tensor) -> None:
        if self.initialised:
            return
        data = _gather_vectors(xe.float())
        centres = kmeans(data, self.codebook_size) if (not _dist_on() or dist.get_rank() == 0) \
            else torch.empty(self.codebook_size, self.code_dim, device=xe.device)
        centres = _broadcast(centres.contiguous())
        self.codebook.copy_(centres)
        self.ema_sum.copy_(centres)
        self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, xe: torch.Tensor, idx: torch.Tensor) -> None:
        # The distortion of this assignment, measured before the codes move.
        err = (xe.float() - self._codes()[idx]).pow(2).sum(1) if self.rate_weight > 0 else None
        counts = _all_reduce(torch.bincount(idx, minlength=self.codebook_size).float())
        sums = _all_reduce(torch.zeros_like(self.ema_sum).index_add_(0, idx, xe.float()))
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        # Laplace smoothing keeps rarely used codes finite.
        smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self._restart_dead(xe)
        if err is not None:
            self._update_rate_cost(err)

    @torch.no_grad()
    def _update_rate_cost(self, err: torch.Tensor) -> None:
        """Price each code at rate_weight x (the stage's mean squared error) per bit of -log2 p.

        Scaling by the stage's own distortion makes one weight fit every stage: a later stage's
        residuals are ~40x smaller than the first's, and so is what a bit buys there."""
        mean = _all_reduce(torch.stack([err.sum(), torch.tensor(float(err.numel()), device=err.device)]))
        d = mean[0] / mean[1].clamp(min=1)
        first = not bool(self.ema_distortion > 0)
        self.ema_distortion.copy_(d if first else self.ema_distortion * self.decay + d * (1 - self.decay))
        self.rate_cost.copy_(self.rate_weight * self.ema_distortion * code_bits(self.ema_count, self.eps))

    @torch.no_grad()
    def _restart_dead(self, xe: torch.Tensor) -> None:
        dead = self.ema_count < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        data = _gather_vectors(xe.float())
        pick = torch.randint(0, data.shape[0], (n_dead,), device="cpu").to(data.device)
        samples = _broadcast(data[pick].contiguous())
        self.codebook[dead] = samples
        # A restarted code starts as if it had been assigned `dead_threshold` vectors at that point.
        self.ema_count[dead] = self.dead_threshold
        self.ema_sum[dead] = samples * self.dead_threshold

    def forward(self, x: torch.Tensor, update: bool | None = None) -> StageOutput:
        """Quantize latent vectors x [N, D]; in training mode the codebook learns by EMA."""
        update = self.training if update is None else update
        xe = self._to_code_space(x)
        if update:
            self._init(xe.detach())
        codes = self._codes()
        idx = nearest_code(xe.detach().float(), codes.float(), cost=self._cost())
        if update:
            self._ema_update(xe.detach(), idx)
            codes = self._codes()
        chosen = F.embedding(idx, codes).to(xe.dtype)
        commit = F.mse_loss(xe, chosen.detach())
        if self.factorised:
            # proj_out learns through the reconstruction; proj_in through the commitment loss.
            quantized = self._from_code_space(chosen.detach())
        else:
            quantized = chosen.detach()
        return StageOutput(quantized, idx, commit)


@dataclass
class RVQOutput:
    quantized: torch.Tensor  # [N, D] with straight-through gradient to the input
    indices: torch.Tensor  # [N, S] (all stages, whatever the dropout)
    commit_loss: torch.Tensor
    n_stages: torch.Tensor  # [N] stages each vector's reconstruction used


class ResidualVQ(nn.Module):
    """S stages, each quantizing what the previous ones left over.

    Quantizer dropout: in training, a share of the vectors reconstruct from a random prefix of the
    stages, so that every prefix decodes to a usable image (one model for every rate). All stages
    still see their residuals and learn, so their codebooks stay in use.
    """

    def __init__(self, dim: int, stages: int, codebook_size: int, code_dim: int | None = None,
                 l2_normalize: bool = False, decay: float = 0.99, eps: float = 1e-5,
                 dead_threshold: float = 1.0, dropout: float = 0.5, rate_weight: float = 0.0) -> None:
        super().__init__()
        self.dim, self.n_stages, self.dropout = dim, stages, dropout
        self.layers = nn.ModuleList(
            VectorQuantizer(dim, codebook_size, code_dim, l2_normalize, decay, eps, dead_threshold, rate_weight)
            for _ in range(stages)
        )

    def forward(self, x: torch.Tensor, n_stages: torch.Tensor | int | None = None) -> RVQOutput:
        """x: [N, D]. n_stages: per-vector prefix length; default: dropout in training, all otherwise.

        Runs in fp32 whatever the caller's autocast: bf16 distances would pick other codes than
        encode() does, and EMA statistics need the precision.
        """
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.float(), n_stages)

    def _forward(self, x: torch.Tensor, n_stages: torch.Tensor | int | None) -> RVQOutput:
        n, S = x.shape[0], self.n_stages
        if n_stages is None:
            n_stages = torch.full((n,), S, device=x.device, dtype=torch.long)
            if self.training and self.dropout > 0:
                drop = torch.rand(n, device=x.device) < self.dropout
                n_stages = torch.where(drop, torch.randint(1, S + 1, (n,), device=x.device), n_stages)
        elif isinstance(n_stages, int):
            n_stages = torch.full((n,), n_stages, device=x.device, dtype=torch.long)
        residual = x
        total = torch.zeros_like(x)
        indices, losses = [], []
        for s, layer in enumerate(self.layers):
            out = layer(residual)
            residual = residual - out.quantized.detach()
            keep = (n_stages > s).to(x.dtype)[:, None]
            total = total + out.quantized * keep
            indices.append(out.indices)
            losses.append(out.commit_loss)
        # Straight-through: value of the quantized sum, gradient of the identity to the encoder.
        quantized = total + (x - x.detach())
        return RVQOutput(quantized, torch.stack(indices, 1), torch.stack(losses).mean(), n_stages)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, n_stages: int | None = None) -> torch.Tensor:
        """Indices [N, S'] for latent vectors x [N, D], greedily stage by stage."""
        return self.encode_with_error(x, n_stages)[0]

    @torch.no_grad()
    def encode_with_error(self, x: torch.Tensor, n_stages: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices [N, S'], squared distance [N, S'] of each stage's input vector to its code,
        i.e. of the residual the stage leaves), greedily stage by stage."""
        residual = x
        out, err = [], []
        for layer in self.layers[: n_stages or self.n_stages]:
            idx = layer.encode(residual)
            residual = residual - layer.lookup(idx)
            out.append(idx)
            err.append(residual.pow(2).sum(-1))
        return torch.stack(out, 1), torch.stack(err, 1)

    @torch.no_grad()
    def beam_encode(self, x: torch.Tensor, depth: int, beam: int, bits: list[torch.Tensor] | None = None,
                    price: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
        """Indices [N, depth] for latent vectors x [N, D] by a beam search over the stages: keep
        the `beam` best partial paths per vector, each scored by its squared latent residual
        plus, with `bits`, price [N] x the bits of its codes so far. bits: stage 0's code
        lengths [K], then each later stage's [K, K] given the previous stage's code.

        Greedy choice (beam 1, no price) is encode(); a wider beam finds paths it misses, where an
        early code that is not the nearest leaves a residual the later stages fit better. Vectors
        go in chunks (default 4096 / beam: each [chunk, beam, K] score matrix stays at 4 MB)."""
        if bits is not None and (price is None or price.shape != x.shape[:1]):
            raise ValueError("bits need a price per vector")
        chunk = chunk or max(1, 4096 // beam)
        books = [layer.lookup(torch.arange(layer.codebook_size, device=x.device)).float()
                 for layer in self.layers[:depth]]
        if bits is not None:
            bits = [b.to(x.device, torch.float32) for b in bits[:depth]]
        out = [self._beam(x[i:i + chunk].float(), books, beam, bits,
                          None if price is None else price[i:i + chunk].float())
               for i in range(0, x.shape[0], chunk)]
        return torch.cat(out) if out else torch.empty(0, depth, dtype=torch.long, device=x.device)

    @staticmethod
    def _beam(x: torch.Tensor, books: list[torch.Tensor], beam: int, bits: list[torch.Tensor] | None,
              price: torch.Tensor | None) -> torch.Tensor:
        n, d = x.shape
        residual = x[:, None, :]  # [n, b, D], b partial paths per vector
        paths = torch.zeros(n, 1, 0, dtype=torch.long, device=x.device)
        spent = torch.zeros(n, 1, device=x.device)  # bits of each path so far
        for s, codes in enumerate(books):
            k = codes.shape[0]
            # ||r - c||^2 for every path and code: [n, b, K]
            score = residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ codes.t() + codes.pow(2).sum(1)
            if bits is not None:
                cost = spent[..., None] + (bits[0].expand(n, 1, k) if s == 0 else bits[s][paths[:, :, -1]])
                score = score + price[:, None, None] * cost
            top = score.reshape(n, -1).topk(min(beam, score.shape[1] * k), dim=1, largest=False).indices
            parent, code = top // k, top % k
            residual = torch.gather(residual, 1, parent[..., None].expand(-1, -1, d)) - codes[code]
            if bits is not None:
                spent = torch.gather(cost.reshape(n, -1), 1, top)
            paths = torch.cat([torch.gather(paths, 1, parent[..., None].expand(-1, -1, s)), code[..., None]], 2)
        return paths[:, 0]  # topk sorts: path 0 scores best

    def codebooks(self) -> list[torch.Tensor]:
        """Each stage's codes [K, code_dim] as the nearest-code search sees them (l2-normalised if so)."""
        return [layer._codes() for layer in self.layers]

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Sum of the stage vectors for indices [..., S'] (any prefix of the stages) -> [..., D].

        A negative index means the stage is absent at that position (a per-position prefix, as
        quantizer dropout trained and vqcli.stagemap codes): it adds nothing."""
        if indices.shape[-1] > self.n_stages:
            raise ValueError(f"{indices.shape[-1]} stages given, the model has {self.n_stages}")
        out = None
        for s in range(indices.shape[-1]):
            idx = indices[..., s]
            v = self.layers[s].lookup(idx.clamp(min=0))
            if bool((idx < 0).any()):
                v = v * (idx >= 0).unsqueeze(-1).to(v.dtype)
            out = v if out is None else out + v
        return out
