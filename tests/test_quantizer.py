"""The residual vector quantizer: lookup, gradients, EMA learning, restarts, prefixes."""

from __future__ import annotations

import torch

from vqcli.quantizer import ResidualVQ, VectorQuantizer, kmeans, nearest_code


def test_nearest_code_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    x, codes = torch.randn(500, 7, generator=g), torch.randn(33, 7, generator=g)
    brute = torch.stack([((codes - v) ** 2).sum(1).argmin() for v in x])
    assert torch.equal(nearest_code(x, codes), brute)
    assert torch.equal(nearest_code(x, codes, chunk=64), brute)  # chunking changes nothing


def test_gradient_reaches_input_through_straight_through() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=4, stages=2, codebook_size=8, dropout=0.0)
    x = torch.randn(64, 4, requires_grad=True)
    out = rvq(x)
    # Value is the quantized sum, not the input...
    assert not torch.allclose(out.quantized, x)
    # ...but the reconstruction gradient passes through as identity, plus the commitment pull.
    (out.quantized * torch.arange(4.0)).sum().backward()
    assert torch.allclose(x.grad, torch.arange(4.0).expand(64, 4))
    x.grad = None
    rvq(x).commit_loss.backward()
    assert x.grad.abs().sum() > 0


def test_ema_moves_code_towards_assigned_vectors() -> None:
    vq = VectorQuantizer(dim=2, codebook_size=2, decay=0.5, dead_threshold=0.0)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq.ema_sum.copy_(vq.codebook)
    vq.ema_count.fill_(1.0)
    vq.initialised.fill_(True)
    vq.train()
    target = torch.tensor([[1.0, 1.0]]).repeat(16, 1)
    before = (vq.codebook[0] - target[0]).norm()
    vq(target)
    after = (vq.codebook[0] - target[0]).norm()
    assert after < 0.5 * before
    assert torch.allclose(vq.codebook[1], torch.tensor([10.0, 10.0]), atol=1e-3)  # unassigned code stays


def test_dead_code_is_restarted_from_recent_vectors() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=3, codebook_size=4, dead_threshold=0.5)
    vq.train()
    data = torch.randn(256, 3)
    vq(data)  # k-means init
    vq.codebook[2] = 1e6  # a code nothing will ever pick
    vq.ema_count[2] = 0.0
    vq(data)
    restarted = vq.codebook[2]
    assert restarted.abs().max() < 100
    assert ((data - restarted).abs().sum(1) < 1e-5).any(), "restart must take an actual input vector"


def test_every_code_used_on_mixture_of_gaussians() -> None:
    torch.manual_seed(0)
    centres = torch.randn(16, 8) * 10
    vq = VectorQuantizer(dim=8, codebook_size=16, decay=0.9, dead_threshold=2.0)
    vq.train()
    # A bad first batch (only two clusters) makes k-means init collapse; restarts must recover.
    vq(centres[torch.randint(0, 2, (512,))] + 0.1 * torch.randn(512, 8))
    for _ in range(150):
        batch = centres[torch.randint(0, 16, (512,))] + 0.1 * torch.randn(512, 8)
        vq(batch)
    vq.eval()
    test = centres[torch.arange(16).repeat(32)] + 0.1 * torch.randn(512, 8)
    used = torch.unique(vq.encode(test))
    assert len(used) == 16


def test_kmeans_handles_fewer_vectors_than_codes() -> None:
    c = kmeans(torch.randn(3, 2), 8)
    assert c.shape == (8, 2) and torch.isfinite(c).all()


def _trained_rvq(stages: int = 4, factorised: bool = False) -> tuple[ResidualVQ, torch.Tensor]:
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=6, stages=stages, codebook_size=16, code_dim=4 if factorised else None, dropout=0.0)
    rvq.train()
    data = torch.randn(2048, 6)
    for _ in range(20):
        rvq(data[torch.randint(0, 2048, (512,))])
    rvq.eval()
    return rvq, data


def test_each_stage_lowers_latent_error_and_prefixes_decode() -> None:
    rvq, data = _trained_rvq()
    idx = rvq.encode(data)
    assert idx.shape == (2048, 4)
    errors = [((rvq.decode(idx[:, :s]) - data) ** 2).mean().item() for s in range(1, 5)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[0] < (data**2).mean().item()
    # Forward (eval) and encode agree on the indices.
    assert torch.equal(rvq(data).indices, idx)


def test_factorised_l2_codes_forward_and_decode() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=6, stages=2, codebook_size=8, code_dim=3, l2_normalize=True, dropout=0.0)
    rvq.train()
    x = torch.randn(256, 6, requires_grad=True)
    out = rvq(x)
    (out.quantized.pow(2).mean() + out.commit_loss).backward()
    assert rvq.layers[0].proj_out.weight.grad is not None and rvq.layers[0].proj_in.weight.grad is not None
    rvq.eval()
    idx = rvq.encode(x.detach())
    assert rvq.decode(idx).shape == (256, 6)


def test_quantizer_dropout_uses_prefixes_in_training() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=4, stages=5, codebook_size=8, dropout=1.0)
    rvq.train()
    out = rvq(torch.randn(1000, 4))
    counts = torch.bincount(out.n_stages, minlength=6)
    assert counts[0] == 0 and (counts[1:] > 100).all()
    assert out.indices.shape == (1000, 5)  # every stage still quantizes (and learns)


def test_forward_under_bf16_autocast_picks_the_fp32_codes() -> None:
    # Training runs the model under bf16 autocast on CUDA; the quantizer must not (CPU autocast
    # stands in for it here: it also turns matmuls into bf16).
    rvq, data = _trained_rvq()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rvq(data)
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.indices, rvq.encode(data))


def test_encode_with_error_is_the_residual_each_stage_leaves() -> None:
    torch.manual_seed(3)
    rvq = ResidualVQ(dim=6, stages=3, codebook_size=8)
    x = torch.randn(300, 6)
    rvq.train()
    rvq(x)  # k-means init and one EMA step
    rvq.eval()
    idx, err = rvq.encode_with_error(x)
    assert torch.equal(idx, rvq.encode(x)) and err.shape == (300, 3)
    for s in range(3):
        left = x - rvq.decode(idx[:, : s + 1])
        assert torch.allclose(err[:, s], left.pow(2).sum(1), atol=1e-5)
    assert [tuple(c.shape) for c in rvq.codebooks()] == [(8, 6)] * 3
