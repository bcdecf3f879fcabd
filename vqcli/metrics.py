"""Image quality metrics and Bjøntegaard rate differences.

- PSNR on 8-bit RGB: MSE over all pixels and the three channels, peak 255, capped at 100 dB
  (identical images would otherwise give infinity, which JSON cannot hold).
- MS-SSIM (pytorch_msssim, 5 scales, 11-px Gaussian window, data range 255). It needs a short
  side of at least 161 px; smaller images get single-scale SSIM instead, and callers count
  them so that reports can say so. (Padding would invent content and bias the score.)
- BD-rate: mean log-rate difference over the overlapping quality interval, with log-rate
  interpolated as a function of quality by PCHIP (monotone piecewise-cubic Hermite, the
  interpolation of current BD-rate tools) rather than the original single cubic fit, which
  can oscillate. Integrals are exact (closed form per cubic piece).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PSNR_CAP = 100.0
MSSSIM_MIN_SIDE = 161  # (win_size - 1) * 2**4 + 1 for 5 scales and an 11-px window
BD_INTERPOLATION = "PCHIP (piecewise cubic Hermite) interpolation of log-rate over quality, overlapping interval"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error for signals of the given peak (capped at PSNR_CAP)."""
    return PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10 * math.log10(peak**2 / mse))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    """(MS-SSIM, True) of two uint8 RGB images, or (SSIM, False) when the short side is under 161 px."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim
    from pytorch_msssim import ssim as _ssim

    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    x = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(b, dtype=np.float32)).permute(2, 0, 1)[None]
    side = min(a.shape[:2])
    with torch.no_grad():
        if side >= MSSSIM_MIN_SIDE:
            return float(_ms_ssim(x, y, data_range=255)), True
        win = min(11, side if side % 2 else side - 1)  # SSIM's window must fit too (odd size)
        return float(_ssim(x, y, data_range=255, win_size=max(win, 1))), False


def msssim_db(v: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - v): spreads out the values near 1 (capped like PSNR)."""
    return PSNR_CAP if v >= 1 else min(PSNR_CAP, -10 * math.log10(1 - v))


# -- PCHIP and BD-rate -----------------------------------------------------------------------

def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives at the knots, Fritsch-Carlson as in SciPy's PchipInterpolator."""
    h = np.diff(x)
    m = np.diff(y) / h
    n = x.size
    if n == 2:
        return np.array([m[0], m[0]])
    d = np.zeros(n)
    for k in range(1, n - 1):
        if m[k - 1] * m[k] > 0:  # same sign: weighted harmonic mean keeps the curve monotone
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])
    d[0] = _end_slope(h[0], h[1], m[0], m[1])
    d[-1] = _end_slope(h[-1], h[-2], m[-1], m[-2])
    return d


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return d


def pchip_integral(x: Sequence[float], y: Sequence[float], lo: float, hi: float) -> float:
    """Exact integral over [lo, hi] (inside [x0, xn]) of the PCHIP interpolant through (x, y)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = _pchip_slopes(x, y)
    total = 0.0
    for i in range(x.size - 1):
        a, b = max(lo, x[i]), min(hi, x[i + 1])
        if b <= a:
            continue
        h = x[i + 1] - x[i]
        m = (y[i + 1] - y[i]) / h
        # The piece as c0 + c1 t + c2 t^2 + c3 t^3 with t = x - x[i].
        c = np.array([y[i], d[i], (3 * m - 2 * d[i] - d[i + 1]) / h, (d[i] + d[i + 1] - 2 * m) / h**2])
        # Its antiderivative sum c_k t^(k+1) / (k+1), between a and b.
        powers = np.arange(1, 5)
        total += float((c * ((b - x[i]) ** powers - (a - x[i]) ** powers) / powers).sum())
    return float(total)


def _curve(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """Points sorted by quality, log-rate; of equal qualities keep the cheapest. None if unusable."""
    pts = [(float(q), math.log(float(r))) for r, q in zip(rates, quality)
           if r is not None and q is not None and r > 0 and math.isfinite(q) and math.isfinite(r)]
    best: dict[float, float] = {}
    for q, lr in pts:
        best[q] = min(lr, best.get(q, math.inf))
    if len(best) < 2:
        return None
    q = np.array(sorted(best))
    return q, np.array([best[v] for v in q])


def bd_rate(ref_rate: Sequence[float], ref_quality: Sequence[float],
            test_rate: Sequence[float], test_quality: Sequence[float]) -> float | None:
    """Average rate difference of `test` against `ref` at equal quality, in percent
    (negative: test needs fewer bits). None when the quality ranges do not overlap or a curve
    has fewer than two distinct points."""
    ref, test = _curve(ref_rate, ref_quality), _curve(test_rate, test_quality)
    if ref is None or test is None:
        return None
    lo, hi = max(ref[0][0], test[0][0]), min(ref[0][-1], test[0][-1])
    if not hi > lo:
        return None
    diff = (pchip_integral(*test, lo, hi) - pchip_integral(*ref, lo, hi)) / (hi - lo)
    return (math.exp(diff) - 1) * 100


def entropy_bits(counts: np.ndarray) -> float:
    """Entropy in bits of the distribution that index counts [K] describe (0 for no counts)."""
    counts = np.asarray(counts)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(max(0.0, -(p * np.log2(p)).sum()))  # max(): -0.0 for a single code


def image_quality(ref: np.ndarray, img: np.ndarray) -> dict[str, float | None]:
    """PSNR, and MS-SSIM where the short side allows its 5 scales (>= 161 px), else SSIM."""
    m, multi = ms_ssim(ref, img)
    return {"psnr": psnr(ref, img), "ms_ssim": m if multi else None, "ssim": None if multi else m}
