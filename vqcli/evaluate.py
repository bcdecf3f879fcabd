"""`vq eval`: rate-distortion of vq against classical codecs over a folder of images.

Every codec is measured the same way: real file sizes (headers included) over the image's
pixel count, PSNR and MS-SSIM of the decoded 8-bit RGB against the original, and wall-clock
encode and decode time per image. Curves are means over the images at each setting (quality
for vq and the others, the number of stages for `vq --stages`, uniform stages without a stage
map), and BD-rates compare those mean curves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import classical
from .classical import CLASSICAL
from .errors import UsageError
from .metrics import BD_INTERPOLATION, MSSSIM_MIN_SIDE, bd_rate, ms_ssim, msssim_db, psnr
from .rate import DEFAULT_EFFORT, check_effort

FIELDS = ("bpp", "psnr", "ms_ssim", "encode_ms", "decode_ms")
VQ_QUALITIES = (0, 10, 20, 30, 40, 50, 55, 60, 70, 80, 90, 100)
UNIFORM = "vq-stages"  # the codec name of vq with uniform stages (--stages)
LABELS = {"vq": "vq", UNIFORM: "vq --stages"}


@dataclass
class Point:
    """One (image, setting) measurement."""

    setting: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_ms: float
    decode_ms: float

    def row(self) -> list[float]:
        return [self.setting, self.bpp, self.psnr, self.ms_ssim, self.encode_ms, self.decode_ms]


@dataclass
class Tally:
    single_scale: int = 0  # images scored with SSIM because they are too small for MS-SSIM
    notes: list[str] = field(default_factory=list)


def parse_codecs(text: str) -> list[str]:
    """'vq-stages,jpeg,webp,avif' -> known codec names (vq itself is always measured)."""
    names = [c.strip().lower() for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in CLASSICAL and c != UNIFORM]
    if unknown:
        raise UsageError(f"codecs: unknown codec {unknown[0]!r} (choose from {UNIFORM}, {', '.join(CLASSICAL)})",
                         params=("codecs",))
    return list(dict.fromkeys(names))


def codec_available(name: str) -> bool:
    return name == UNIFORM or classical.available(name)


def _score(orig: np.ndarray, rec: np.ndarray, tally: Tally) -> tuple[float, float]:
    m, multi = ms_ssim(orig, rec)
    if not multi:
        tally.single_scale += 1
    return psnr(orig, rec), m


def vq_points(weights, rgb: np.ndarray, tally: Tally, uniform: bool = False, effort: int = DEFAULT_EFFORT
              ) -> list[Point]:
    """One image at every quality of VQ_QUALITIES (or, uniform, every stage count) at an effort
    (default DEFAULT_EFFORT): the network runs once; each point's encode time is that plus
    the search and coding at its setting."""
    from . import codec
    from .images import LoadedImage

    t0 = time.perf_counter()
    enc = codec.ImageEncoder(weights, codec.entropy_model(weights), LoadedImage(rgb, None, "RGB"), "RGB", effort,
                             enhance=not uniform)
    t_model = time.perf_counter() - t0
    settings = range(1, weights.config.stages + 1) if uniform else VQ_QUALITIES
    return [_timed_point(setting, rgb, tally, lambda s=setting: (enc.uniform(s) if uniform else enc.at_quality(s)).data,
                         lambda data: codec.decompress(weights, data).rgb, t_model) for setting in settings]


def _timed_point(setting: float, rgb: np.ndarray, tally: Tally, encode, decode, t_before: float = 0.0) -> Point:
    """One point of a ladder: encode() -> bytes, decode(bytes) -> pixels, each timed (t_before:
    encode work shared by the ladder, added to each point's encode time), scored against rgb."""
    t0 = time.perf_counter()
    data = encode()
    t_enc = t_before + time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = decode(data)
    t_dec = time.perf_counter() - t0
    p, m = _score(rgb, rec, tally)
    h, w = rgb.shape[:2]
    return Point(setting, len(data) * 8 / (h * w), p, m, t_enc * 1e3, t_dec * 1e3)


def classical_points(name: str, rgb: np.ndarray, tally: Tally) -> list[Point]:
    """The quality ladder of one Pillow codec on one image."""
    from PIL import Image

    im = Image.fromarray(rgb)
    return [_timed_point(q, rgb, tally, lambda q=q: classical.encode(name, im, q), classical.decode)
            for q in CLASSICAL[name].qualities]


def mean_curve(per_image: list[list[Point]], key: str) -> list[dict[str, float]]:
    """Mean of every field over the images, per setting."""
    rows = []
    for j, first in enumerate(per_image[0]):
        pts = [img[j] for img in per_image]
        row: dict[str, float] = {key: first.setting}
        for f in FIELDS:
            row[f] = float(np.mean([getattr(p, f) for p in pts]))
        row["ms_ssim_db"] = msssim_db(row["ms_ssim"])
        rows.append(row)
    return rows


def bd_rates(curves: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float | None]]:
    """BD-rate (%) of vq against each classical codec, in PSNR and in MS-SSIM (dB)."""
    vq = curves["vq"]
    out = {}
    for name, ref in curves.items():
        if name == "vq":
            continue
        out[name] = {
            metric: bd_rate([r["bpp"] for r in ref], [r[q] for r in ref], [r["bpp"] for r in vq], [r[q] for r in vq])
            for metric, q in (("psnr", "psnr"), ("ms_ssim", "ms_ssim_db"))
        }
    return out


def evaluate(weights, folder: Path, codecs: list[str], limit: int | None = None,
             progress: bool = True, effort: int | None = None) -> dict[str, Any]:
    """Run every codec over the folder's images (vq at `effort`, default DEFAULT_EFFORT);
    returns the full, JSON-ready report."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .images import images_in, load_image

    effort = check_effort(effort)
    files = images_in(folder, limit)
    tally = Tally()
    active = []
    for c in codecs:
        if codec_available(c):
            active.append(c)
        else:
            tally.notes.append(f"{label(c)} skipped: this Pillow has no {c.upper()} support")
    per_codec: dict[str, list[list[Point]]] = {c: [] for c in ["vq", *active]}
    per_image = []
    pixels = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating", total=len(files))
        for path in files:
            bar.update(task, description=f"evaluating {path.name}")
            rgb = load_image(path).rgb  # RGB only: alpha is coded losslessly and not part of the score
            pixels += rgb.shape[0] * rgb.shape[1]
            entry: dict[str, Any] = {"file": str(path.relative_to(folder)), "width": rgb.shape[1],
                                     "height": rgb.shape[0], "points": {}}
            for c in per_codec:
                pts = vq_points(weights, rgb, tally, c == UNIFORM, effort) if c in LABELS \
                    else classical_points(c, rgb, tally)
                per_codec[c].append(pts)
                entry["points"][c] = [p.row() for p in pts]
            per_image.append(entry)
            bar.advance(task)
    curves = {c: mean_curve(v, settings(c)) for c, v in per_codec.items()}
    if tally.single_scale:
        tally.notes.append(f"{tally.single_scale} of {sum(len(v[0]) for v in per_codec.values()) * len(files)} "
                           f"scores used single-scale SSIM: images with a side under {MSSSIM_MIN_SIDE} px "
                           f"are too small for MS-SSIM")
    _coverage_notes(curves, tally)
    return {
        "folder": str(folder), "images": len(files), "megapixels": pixels / 1e6,
        "weights": None if weights.path is None else str(weights.path), "model_id": weights.model_id,
        "stages": weights.config.stages, "codebook_size": weights.config.codebook_size, "effort": effort,
        "bd_rate_interpolation": BD_INTERPOLATION,
        "bd_rate_quality": {"psnr": "PSNR (dB, 8-bit RGB)", "ms_ssim": "MS-SSIM in dB, -10 log10(1 - MS-SSIM)"},
        "codecs": {c: {"label": label(c), "settings": settings(c),
                       **({} if c in LABELS else {"options": CLASSICAL[c].options(0) | {"quality": "swept"}}),
                       "curve": curves[c]} for c in curves},
        "bd_rate": bd_rates(curves),
        "notes": tally.notes,
        "per_image_fields": ["setting", *FIELDS],
        "per_image": per_image,
    }


def label(codec: str) -> str:
    return LABELS[codec] if codec in LABELS else CLASSICAL[codec].label


def settings(codec: str) -> str:
    """What a codec's curve sweeps."""
    return "stages" if codec == UNIFORM else "quality"


def _coverage_notes(curves: dict[str, list[dict[str, float]]], tally: Tally) -> None:
    lo, hi = min(r["bpp"] for r in curves["vq"]), max(r["bpp"] for r in curves["vq"])
    for c, rows in curves.items():
        if c == "vq":
            continue
        clo, chi = min(r["bpp"] for r in rows), max(r["bpp"] for r in rows)
        if clo > lo or chi < hi:
            tally.notes.append(f"{label(c)} sweep spans {clo:.3f}-{chi:.3f} bpp, vq {lo:.3f}-{hi:.3f} bpp: "
                               "BD-rates use the overlapping quality range only")


# -- terminal output ----------------------------------------------------------------------------

def _pct(v: float | None) -> str:
    if v is None:
        return "n/a"
    colour = "green" if v < 0 else "red"
    return f"[{colour}]{v:+.1f}%[/]"


def render(report: dict[str, Any]) -> list[Any]:
    """Rich renderables: the BD-rate table, then one RD table per codec, then notes."""
    from rich.table import Table

    out: list[Any] = []
    if report["bd_rate"]:
        t = Table(title=f"BD-rate of vq against each codec ({report['images']} images; negative = vq saves bits)",
                  title_justify="left", caption=f"interpolation: {report['bd_rate_interpolation']}; "
                  "MS-SSIM taken in dB", caption_justify="left", header_style="bold")
        t.add_column("reference")
        t.add_column("BD-rate (PSNR)", justify="right")
        t.add_column("BD-rate (MS-SSIM)", justify="right")
        for c, v in report["bd_rate"].items():
            t.add_row(report["codecs"][c]["label"], _pct(v["psnr"]), _pct(v["ms_ssim"]))
        out.append(t)
    for info in report["codecs"].values():
        key = info["settings"]
        t = Table(title=f"{info['label']}: mean over {report['images']} images", title_justify="left",
                  header_style="bold")
        for col in (key, "bpp", "PSNR (dB)", "MS-SSIM", "MS-SSIM (dB)", "encode (ms)", "decode (ms)"):
            t.add_column(col, justify="right")
        for r in info["curve"]:
            t.add_row(str(int(r[key])), f"{r['bpp']:.4f}", f"{r['psnr']:.2f}", f"{r['ms_ssim']:.4f}",
                      f"{r['ms_ssim_db']:.2f}", f"{r['encode_ms']:.1f}", f"{r['decode_ms']:.1f}")
        out.append(t)
    out.extend(f"[yellow]note:[/] {n}" for n in report["notes"])
    return out
