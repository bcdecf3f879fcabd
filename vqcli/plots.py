"""PNG figures for `vq stats codebook --plot` and `vq eval --plot`.

matplotlib is an optional extra (`pip install 'vqcli[plot]'`): it is imported here, lazily,
with the non-interactive Agg backend, and its absence is a one-line error.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VQError
from .fileio import write_target
from .metrics import entropy_bits

DPI = 90
INSTALL_HINT = "pip install 'vqcli[plot]' (or pip install matplotlib)"


def pyplot(path: Path | str):
    """matplotlib.pyplot on the Agg backend, or a VQError naming the output and the fix."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise VQError(f"{path}: plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    return plt


def _save(fig, plt, path: Path | str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    write_target(path, buf.getvalue(), force=True)  # '-': stdout; else atomic, no half-written PNG (the CLI checked -f)


def _pca2(codes: np.ndarray) -> np.ndarray:
    """2-D PCA projection of codebook vectors [K, d] (d == 1 gets a zero second axis)."""
    x = codes - codes.mean(0)
    if x.shape[1] == 1:
        return np.concatenate([x, np.zeros_like(x)], 1)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def codebook_figure(path: Path | str, histogram: np.ndarray, title: str,
                    codes: list[np.ndarray] | None = None) -> None:
    """Code usage per stage: sorted usage curves (log), a usage heat map by code index, used codes
    and perplexity per stage; with `codes`, a PCA scatter of each stage's codebook coloured by usage."""
    plt = pyplot(path)
    hist = np.asarray(histogram, dtype=np.int64)
    s_count = hist.shape[0]
    pca_rows = 0 if codes is None else math.ceil(s_count / 5)
    fig = plt.figure(figsize=(12, 7.2 + 2.6 * pca_rows), layout="constrained")
    grid = fig.add_gridspec(2 + pca_rows, 5, height_ratios=[3.2, 2.6] + [2.6] * pca_rows)
    _sorted_usage(fig.add_subplot(grid[0, :3]), hist, plt.get_cmap("viridis"))
    _used_and_perplexity(fig.add_subplot(grid[0, 3:]), hist)
    _usage_map(fig, fig.add_subplot(grid[1, :]), hist)
    if codes is not None:
        # One colour scale for every stage, so that panels compare; one colourbar for them all.
        norm = plt.Normalize(0, max(1.0, float(np.log10(hist.max(initial=1)))))
        axes = [fig.add_subplot(grid[2 + s // 5, s % 5]) for s in range(len(codes))]
        sc = [_codebook_pca(ax, np.asarray(cb, dtype=np.float64), hist[s], s, norm)
              for s, (ax, cb) in enumerate(zip(axes, codes))][-1]
        fig.colorbar(sc, ax=axes, label="log10 count (x: dead code)", pad=0.01, shrink=0.8)
    fig.suptitle(title, fontsize=12)
    _save(fig, plt, path)


def _sorted_usage(ax, hist: np.ndarray, cmap) -> None:
    s_count, k = hist.shape
    for s in range(s_count):
        c = np.sort(hist[s])[::-1]
        total = max(1, int(c.sum()))
        c = c[c > 0]  # log scale: dead codes are where a curve stops
        ax.plot(np.arange(1, c.size + 1), c / total, color=cmap(s / max(1, s_count - 1)), lw=1.6,
                label=f"stage {s + 1}")
    ax.axhline(1 / k, color="0.4", ls="--", lw=1, label=f"uniform (1/{k})")
    ax.set(yscale="log", xlim=(0, k + 1), xlabel="code rank (most used first)", ylabel="share of indices",
           title="Sorted code usage per stage")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if s_count > 5 else 1, loc="lower left")


def _used_and_perplexity(ax, hist: np.ndarray) -> None:
    s_count, k = hist.shape
    stages = np.arange(1, s_count + 1)
    ent = np.array([entropy_bits(row) for row in hist])
    ax.bar(stages - 0.2, (hist > 0).sum(1), width=0.4, color="#4c72b0", label="codes used")
    ax.bar(stages + 0.2, 2.0 ** ent, width=0.4, color="#dd8452", label="perplexity $2^H$")
    ax.axhline(k, color="0.4", ls="--", lw=1, label=f"K = {k}")
    ax.set(xlabel="stage", ylabel="codes", title="Codes used and perplexity", xticks=stages, ylim=(0, k * 1.3))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=3)


def _usage_map(fig, ax, hist: np.ndarray) -> None:
    from matplotlib.colors import LogNorm

    s_count, k = hist.shape
    shown = np.where(hist > 0, hist, np.nan)  # dead codes stay blank (background shows through)
    ax.set_facecolor("#f0d0d0")
    im = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="magma_r",
                   norm=LogNorm(vmin=max(1, np.nanmin(shown) if np.isfinite(shown).any() else 1),
                                vmax=max(2, hist.max())),
                   extent=(-0.5, k - 0.5, s_count + 0.5, 0.5))
    ax.set(xlabel="code index", ylabel="stage", title="Usage histogram by code index (pink: dead codes)",
           yticks=np.arange(1, s_count + 1))
    fig.colorbar(im, ax=ax, label="count (log)", pad=0.01)


def _codebook_pca(ax, codes: np.ndarray, counts: np.ndarray, stage: int, norm):
    """One stage's codes on their first two principal axes, coloured by log usage; the scatter."""
    xy = _pca2(codes)
    live = counts > 0
    sc = ax.scatter(xy[live, 0], xy[live, 1], c=np.log10(counts[live]), s=9, cmap="viridis", norm=norm, linewidths=0)
    ax.scatter(xy[~live, 0], xy[~live, 1], marker="x", s=10, c="#c44e52", linewidths=0.8)
    ax.set_title(f"stage {stage + 1}: PCA of codebook", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.25)
    return sc


MARKERS = {"vq": "o", "vq-stages": "v", "jpeg": "s", "webp": "^", "avif": "D"}
COLOURS = {"vq": "#c44e52", "vq-stages": "#dd8452", "jpeg": "#4c72b0", "webp": "#55a868", "avif": "#8172b2"}


def rd_figure(path: Path | str, report: dict[str, Any]) -> None:
    """bpp vs PSNR and bpp vs MS-SSIM (dB) for every codec of an eval report."""
    plt = pyplot(path)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    for name, info in report["codecs"].items():
        curve = info["curve"]
        label = info["label"]
        bd = report["bd_rate"].get(name)
        for ax, key, metric in ((axes[0], "psnr", "psnr"), (axes[1], "ms_ssim_db", "ms_ssim")):
            extra = ""
            if bd is not None:
                extra = f" (vq BD-rate {bd[metric]:+.1f}%)" if bd[metric] is not None else " (vq BD-rate n/a)"
            ax.plot([r["bpp"] for r in curve], [r[key] for r in curve], marker=MARKERS.get(name, "o"),
                    ms=4.5, lw=2.2 if name == "vq" else 1.5, color=COLOURS.get(name), label=label + extra,
                    zorder=3 if name == "vq" else 2)
    hi = _bpp_max(report)
    for ax, key, ylabel, title in ((axes[0], "psnr", "PSNR (dB, RGB)", "Rate vs PSNR"),
                                   (axes[1], "ms_ssim_db", "MS-SSIM (dB)  = −10·log₁₀(1 − MS-SSIM)",
                                    "Rate vs MS-SSIM")):
        ys = [r[key] for info in report["codecs"].values() for r in info["curve"] if r["bpp"] <= hi * 1.05]
        pad = 0.05 * (max(ys) - min(ys) or 1)
        ax.set(xlabel="rate (bits per pixel)", ylabel=ylabel, title=title, xlim=(0, hi * 1.05),
               ylim=(min(ys) - pad, max(ys) + pad))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{report['images']} images from {Path(report['folder']).name}, vq model {report['model_id']} "
                 f"(BD-rate: PCHIP, overlapping range)", fontsize=11)
    _save(fig, plt, path)


def _bpp_max(report: dict[str, Any]) -> float:
    """Right end of the x axis: vq's range with a margin, widened so that every classical curve
    shows at least two points, but not out to a sweep's far end (which would squash vq)."""
    hi = 1.6 * max(r["bpp"] for r in report["codecs"]["vq"]["curve"])
    for name, info in report["codecs"].items():
        b = sorted(r["bpp"] for r in info["curve"])
        if name != "vq" and len(b) > 1:
            hi = max(hi, b[1])
    return hi
