"""Codebook usage (`vq stats`): how each RVQ stage uses its K codes (pure numpy, exact).

Sources: the histogram stored in the weights (training images), one recomputed over a
folder of images, or the indices of one .vqz file. Everything here works on integer
counts [S, K]; the only floating point is in the final ratios and logarithms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import to_numpy
from .metrics import entropy_bits

SPARK = " ▁▂▃▄▅▆▇█"


@dataclass
class StageUsage:
    """Usage statistics of one stage's codebook."""

    stage: int  # 1-based, as shown to users
    codebook_size: int  # K
    total: int  # number of indices counted
    used: int  # codes with a non-zero count
    entropy_bits: float  # H of the empirical index distribution, bits
    perplexity: float  # 2**H: the effective number of codes
    dead: list[int]  # indices never used
    top1_codes: int  # how many codes make the "top 1%": ceil(K / 100), at least 1
    top1_share: float  # share of all indices that fall on those codes
    code_distance: float | None = None  # mean squared distance of an input vector to its code

    @property
    def max_entropy_bits(self) -> float:
        return math.log2(self.codebook_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dead_count"] = len(self.dead)
        d["used_share"] = self.used / self.codebook_size
        d["max_entropy_bits"] = self.max_entropy_bits
        return d


def stage_usage(counts: np.ndarray, stage: int = 1, code_distance: float | None = None) -> StageUsage:
    """Statistics of one stage from its index counts [K] (an empty stage reports zeros)."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size < 1 or (counts < 0).any():
        raise ValueError(f"expected non-negative counts [K], got shape {counts.shape}")
    k = counts.size
    total = int(counts.sum())
    top_n = max(1, math.ceil(k / 100))
    if total == 0:
        entropy, perplexity, top_share = 0.0, 0.0, 0.0
    else:
        entropy = entropy_bits(counts)
        perplexity = float(2.0 ** entropy)
        top_share = int(np.sort(counts)[::-1][:top_n].sum()) / total
    return StageUsage(stage, k, total, int((counts > 0).sum()), entropy, perplexity,
                      np.flatnonzero(counts == 0).tolist(), top_n, top_share,
                      None if code_distance is None else float(code_distance))


def codebook_usage(histogram: Any, code_distance: Any = None) -> list[StageUsage]:
    """Per-stage statistics of a histogram [S, K] (numpy or torch), with optional distances [S]."""
    hist = to_numpy(histogram).astype(np.int64)
    if hist.ndim != 2:
        raise ValueError(f"expected a histogram [S, K], got shape {hist.shape}")
    dist = None if code_distance is None else to_numpy(code_distance).astype(np.float64).reshape(-1)
    return [stage_usage(hist[s], s + 1, None if dist is None or s >= dist.size else float(dist[s]))
            for s in range(hist.shape[0])]


def file_histogram(indices: Any, codebook_size: int) -> np.ndarray:
    """Histogram [S', K] of indices [S', h, w] (e.g. the stages stored in one .vqz file; absent
    indices, -1 where a stage map drops a stage, are not counted)."""
    idx = to_numpy(indices).astype(np.int64)
    if idx.ndim != 3:
        raise ValueError(f"expected indices [S, h, w], got shape {idx.shape}")
    return np.stack([np.bincount(idx[s][idx[s] >= 0], minlength=codebook_size)[:codebook_size]
                     for s in range(idx.shape[0])]) if idx.shape[0] else np.zeros((0, codebook_size), np.int64)


# -- sources ----------------------------------------------------------------------------------

@dataclass
class IndexCounts:
    """Index counts to report on, and where they come from."""

    histogram: np.ndarray  # [S, K] int64
    code_distance: np.ndarray | None  # [S], mean squared distance of a stage's input to its code
    source: str  # for titles
    extra: dict[str, Any]  # for the JSON report


def codebook_counts(weights, images: Path | None = None, limit: int | None = None,
                    progress: bool = True) -> IndexCounts:
    """The histogram stored in the weights (training images), or one recomputed over a folder of
    images (its first `limit`; rich progress on stderr)."""
    if images is None:
        d = weights.stats.get("code_distance")
        return IndexCounts(to_numpy(weights.stats["histogram"]).astype(np.int64), None if d is None else to_numpy(d),
                           "histogram stored in the weights", {})
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .images import images_in
    from .indexcounts import collect_index_counts

    files = images_in(images, limit)
    dev = next(weights.model.parameters()).device
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=not progress, transient=True) as p:
        task = p.add_task("index statistics", total=len(files))
        st = collect_index_counts(weights.model, files, dev, on_image=lambda _: p.advance(task))
    return IndexCounts(to_numpy(st["histogram"]).astype(np.int64), to_numpy(st["code_distance"]),
                       f"{len(files)} images in {images}", {"images": len(files)})


def file_counts(weights, path: Path) -> IndexCounts:
    """The counts of the indices stored in one .vqz file (entropy-decoded, no pixels)."""
    from . import codec
    from .fileio import read_file

    idx = codec.unpack(weights, read_file(path), name=str(path))[1]
    return IndexCounts(file_histogram(idx, weights.config.codebook_size), None, str(path),
                       {"file": str(path), "grid": list(idx.shape[1:]), "stored_stages": int(idx.shape[0])})


def codebook_vectors(weights) -> list[np.ndarray]:
    """Each stage's codes [K, code_dim] (float32), as the nearest-code search sees them."""
    return [to_numpy(c.float()) for c in weights.model.quantizer.codebooks()]


# -- terminal output ----------------------------------------------------------------------------

def sparkline(counts: np.ndarray, width: int = 32) -> str:
    """Sorted usage on a log scale, squeezed into `width` cells: a flat line means uniform use,
    a cliff means a few codes carry the stage; blanks at the end are dead codes."""
    c = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    if c.size == 0 or c[0] <= 0:
        return " " * min(width, max(c.size, 1))
    # Each cell is the mean count of a run of consecutive ranks: blank only if all are dead.
    v = np.array([b.mean() for b in np.array_split(c, min(width, c.size))])
    top = math.log1p(v[0])
    cells = [SPARK[0] if x <= 0 else SPARK[max(1, min(8, math.ceil(8 * math.log1p(x) / top)))] for x in v]
    return "".join(cells)


def _dead_text(dead: list[int], k: int, n: int = 3) -> str:
    if not dead:
        return "0"
    if len(dead) == k:
        return f"{k} (all)"
    return f"{len(dead)} ({', '.join(map(str, dead[:n]))}{', …' if len(dead) > n else ''})"


def render_table(stats: list[StageUsage], title: str, hist: np.ndarray | None = None, width: int = 120):
    """A rich table: one row per stage, with a sorted-usage sparkline (sized to the terminal)."""
    from rich.table import Table

    caption = ("H: entropy of the stage's indices (bits, max log2 K); perplexity: 2^H; top 1%: share of "
               "indices on the ceil(K/100) most used codes; dist²: mean squared distance of a stage's input "
               "to its code; usage: sorted counts, log scale (--json lists every dead code)")
    from rich import box
    from rich.console import Group

    # Narrow terminals get the sparklines as lines under the table rather than a squeezed column.
    inline = hist is not None and width >= 110
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left", header_style="bold",
              box=box.SIMPLE_HEAD)
    for name in ("stage", "used/K", "perplexity", "H/log2K", "top 1%"):
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("dead", overflow="fold", min_width=6, max_width=18)
    t.add_column("dist²", justify="right", no_wrap=True)
    if inline:
        t.add_column("usage", no_wrap=True)
    for st in stats:
        row = [str(st.stage), f"{st.used}/{st.codebook_size}", f"{st.perplexity:.1f}",
               f"{st.entropy_bits:.2f}/{st.max_entropy_bits:.0f}" if st.max_entropy_bits.is_integer()
               else f"{st.entropy_bits:.2f}/{st.max_entropy_bits:.2f}", f"{st.top1_share:.1%}",
               _dead_text(st.dead, st.codebook_size),
               "n/a" if st.code_distance is None else f"{st.code_distance:.4g}"]
        if inline:
            row.append(f"[cyan]{sparkline(hist[st.stage - 1], 32)}[/]")
        t.add_row(*row)
    if hist is None or inline:
        return t
    spark = max(8, min(64, width - 12))
    lines = [f"stage {st.stage:>2} [cyan]{sparkline(hist[st.stage - 1], spark)}[/]" for st in stats]
    return Group(t, "[bold]usage per stage[/] (sorted counts, log scale)", *lines)


def report_dict(stats: list[StageUsage], source: str, weights, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-ready report (histogram included, so a reader can recompute anything)."""
    return {"source": source, "model_id": weights.model_id,
            "weights": None if weights.path is None else str(weights.path),
            "stages": len(stats), "codebook_size": weights.config.codebook_size,
            **(extra or {}), "per_stage": [s.to_dict() for s in stats]}
