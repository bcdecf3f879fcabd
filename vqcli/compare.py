"""`vq compare`: one image through vq, JPEG, WebP and AVIF at (as nearly as each allows) the same
file size, shown side by side as nearest-neighbour zoomed crops.

Every codec gets the largest file that fits the byte budget: vq the most stages (its `bpp` rate
rule), the others the highest quality, found by binary search over the quality setting (file
size grows with quality; where a codec's smallest file is over the budget, that file is used and
a note says so). Sizes are whole files of the whole image; PSNR and MS-SSIM are over the whole
image too, the crop is only what the figure shows.

The figure is drawn with Pillow's ImageDraw rather than matplotlib: it needs no optional
dependency, and every pixel of a zoomed crop lands on exactly one block of figure pixels (no
resampling by a plotting library's DPI), which is the point of a side-by-side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import UsageError

PANEL = 320  # default width and height of a panel's crop, after zoom
CAPTION_LINES = 3


@dataclass
class Entry:
    """One codec's file of the image."""

    codec: str  # "original", "vq" or a key of classical.CLASSICAL
    label: str
    setting: str  # "12 stages", "quality 37"
    bytes: int
    bpp: float
    psnr: float | None
    ms_ssim: float | None  # None for images too small for MS-SSIM (ssim is set instead)
    ssim: float | None = None
    note: str | None = None
    rgb: np.ndarray | None = field(default=None, repr=False)  # the decoded image

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rgb")
        return d


def parse_crop(text: str | None, width: int, height: int, side: int = PANEL // 2) -> tuple[int, int, int, int]:
    """'X,Y,W,H' -> a box inside the image; None: a side x side box (or less) at the centre."""
    if text is None:
        w, h = min(side, width), min(side, height)
        return (width - w) // 2, (height - h) // 2, w, h
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"crop {text!r}: expected X,Y,W,H (four integers)", params=("crop",)) from None
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise UsageError(f"crop {text}: not inside the {width}x{height} image", params=("crop",))
    return x, y, w, h


def target_bytes(width: int, height: int, bpp: float | None, size: int | None) -> int:
    """The byte budget from bpp (default 0.25) or size."""
    if bpp is not None and size is not None:
        raise UsageError("choose at most one of bpp and size", params=("bpp", "size"))
    if size is not None:
        if size < 1:
            raise UsageError(f"size {size}: must be positive", params=("size",))
        return size
    bpp = 0.25 if bpp is None else bpp
    if not bpp > 0:
        raise UsageError(f"bpp {bpp:g}: must be positive", params=("bpp",))
    return max(1, int(bpp * width * height / 8))


def _scored(codec: str, label: str, setting: str, data_len: int, ref: np.ndarray, rec: np.ndarray,
            note: str | None = None) -> Entry:
    from .metrics import image_quality

    q = image_quality(ref, rec)
    h, w = ref.shape[:2]
    return Entry(codec, label, setting, data_len, 8 * data_len / (w * h), q["psnr"], q["ms_ssim"], q["ssim"], note, rec)


def fit_quality(name: str, image, budget: int) -> tuple[int, bytes, str | None]:
    """(quality, file, note): the highest quality of codec `name` whose file fits `budget` bytes."""
    from .classical import CLASSICAL, encode

    lo, hi = CLASSICAL[name].quality_range
    cache: dict[int, bytes] = {}

    def enc(q: int) -> bytes:
        if q not in cache:
            cache[q] = encode(name, image, q)
        return cache[q]

    if len(enc(lo)) > budget:
        return lo, enc(lo), f"its smallest file (quality {lo}) is {len(enc(lo)):,} bytes, over the budget"
    while lo < hi:  # invariant: enc(lo) fits
        mid = (lo + hi + 1) // 2
        if len(enc(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo, enc(lo), None


def compare(weights, rgb: np.ndarray, budget: int, codecs: list[str]) -> list[Entry]:
    """The original and each codec's largest file within `budget` bytes (codecs Pillow lacks are
    skipped with a note on the original's entry)."""
    from PIL import Image

    from . import codec
    from .classical import CLASSICAL, available, decode
    from .images import LoadedImage

    h, w = rgb.shape[:2]
    missing = [c for c in codecs if not available(c)]
    out = [Entry("original", "original", f"{w}x{h}", 3 * w * h, 24.0, None, None, rgb=rgb,
                 note=f"skipped (no Pillow support): {', '.join(missing)}" if missing else None)]
    res = codec.compress(weights, LoadedImage(rgb, None, "RGB"), bpp=8 * budget / (w * h), best_effort=True)
    out.append(_scored("vq", "vq", f"quality {res.quality:g}", len(res.data), rgb,
                       codec.decompress(weights, res.data).rgb, res.note))
    im = Image.fromarray(rgb)
    for c in codecs:
        if c in missing:
            continue
        q, data, note = fit_quality(c, im, budget)
        out.append(_scored(c, CLASSICAL[c].label, f"quality {q}", len(data), rgb, decode(data), note))
    return out


def render(entries: list[Entry], title: str) -> list[Any]:
    """Rich renderables: a table of the codecs' numbers, then the original's note, if any."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for col in ("codec", "setting", "bytes", "bpp", "PSNR (dB)", "MS-SSIM", "note"):
        t.add_column(col, justify="left" if col in ("codec", "setting", "note") else "right")
    for e in entries[1:]:
        t.add_row(e.label, e.setting, f"{e.bytes:,}", f"{e.bpp:.3f}", f"{e.psnr:.2f}",
                  f"{e.ms_ssim:.4f}" if e.ms_ssim is not None else f"SSIM {e.ssim:.4f}", e.note or "")
    return [t] + ([f"[yellow]note:[/] {entries[0].note}"] if entries[0].note else [])


def caption(e: Entry) -> list[str]:
    """The lines under a panel."""
    if e.codec == "original":
        return ["original", f"{e.setting}, {e.bytes:,} bytes raw", "24 bpp"]
    quality = f"PSNR {e.psnr:.2f} dB, " + (f"MS-SSIM {e.ms_ssim:.4f}" if e.ms_ssim is not None
                                           else f"SSIM {e.ssim:.4f}")
    return [f"{e.label} ({e.setting})", f"{e.bytes:,} bytes, {e.bpp:.3f} bpp", quality]


def grid_figure(entries: list[Entry], box: tuple[int, int, int, int], zoom: int | None = None,
                columns: int | None = None):
    """A Pillow image: one zoomed crop per entry (nearest neighbour), its caption underneath."""
    from PIL import Image, ImageDraw, ImageFont

    x, y, w, h = box
    zoom = zoom or max(1, PANEL // max(w, h))
    pw, ph = w * zoom, h * zoom
    font = ImageFont.load_default(size=max(11, min(16, pw // 22)))
    line = int(font.size * 1.35)
    cols = columns or len(entries)
    rows = -(-len(entries) // cols)
    pad = 8
    cell_w, cell_h = pw + pad, ph + CAPTION_LINES * line + 2 * pad
    fig = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(fig)
    for i, e in enumerate(entries):
        cx, cy = pad + (i % cols) * cell_w, pad + (i // cols) * cell_h
        crop = Image.fromarray(e.rgb[y:y + h, x:x + w]).resize((pw, ph), Image.Resampling.NEAREST)
        fig.paste(crop, (cx, cy))
        for j, text in enumerate(caption(e)):
            draw.text((cx, cy + ph + pad // 2 + j * line), text, fill="black", font=font)
    return fig
