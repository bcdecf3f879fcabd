"""Speed and memory of vq against Pillow's JPEG, WebP and AVIF: one table, measured in one run.

    python tools/bench_speed.py [--val DIR] [--out DIR] [--big-mp 24] [--vq-quality 70 ...]
                                                                           (make bench-speed)

Every measurement runs in a fresh subprocess (this script with --child), which times only the
codec call (start-up, model loading and file I/O excluded; 768x512: median of a few repeats)
and reports its peak RSS (VmHWM: the whole process, image file I/O included, as the CLI
would use). The big image is a mosaic of upscaled val photos, written to --out (not committed).
vq's --jobs scaling is timed through the CLI on a folder of val photos (start-up included).
--vq-quality adds vq at other qualities (rows "vq -q Q"), side by side with the default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODECS = ("vq", "JPEG", "WebP", "AVIF")
SETTINGS = {"JPEG": {"format": "JPEG", "quality": 75}, "WebP": {"format": "WEBP", "quality": 75, "method": 6},
            "AVIF": {"format": "AVIF", "quality": 60, "speed": 6}}


# -- children: one codec, one operation, one image, in a fresh process ------------------------------
def child(codec: str, op: str, src: Path, repeats: int) -> dict:
    import io

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    times = []
    if codec.startswith("vq"):
        import torch

        from vqcli import codec as vqc
        from vqcli.codecli import encode_output
        from vqcli.images import load_image
        from vqcli.weights import load_weights

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        w = load_weights(None, "cpu")
        quality = float(codec[len("vq -q "):]) if codec != "vq" else None
        vqz = src.with_suffix(".vqz" if quality is None else f".q{quality:g}.vqz")
        if op == "encode":
            image = load_image(src)
            pixels = image.rgb.shape[0] * image.rgb.shape[1]
            for _ in range(repeats):
                t = time.perf_counter()
                data = vqc.compress(w, image, quality=quality).data
                times.append(time.perf_counter() - t)
            vqz.write_bytes(data)
        else:
            data = vqz.read_bytes()
            for _ in range(repeats):
                t = time.perf_counter()
                dec = vqc.decompress(w, data)
                times.append(time.perf_counter() - t)
            pixels = dec.rgb.shape[0] * dec.rgb.shape[1]
            encode_output(dec, str(src.with_suffix(".out.png")))  # the CLI's output step, for the RSS
    else:
        im = Image.open(src).convert("RGB")
        pixels = im.width * im.height
        opts = dict(SETTINGS[codec])
        fmt = opts.pop("format")
        buf = io.BytesIO()
        for _ in range(repeats):
            buf = io.BytesIO()
            t = time.perf_counter()
            im.save(buf, fmt, **opts)
            times.append(time.perf_counter() - t)
        if op == "decode":
            data, times = buf.getvalue(), []
            for _ in range(repeats):
                t = time.perf_counter()
                with Image.open(io.BytesIO(data)) as d:
                    d.load()
                times.append(time.perf_counter() - t)
    return {"seconds": statistics.median(times), "pixels": pixels,
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM belongs to the process image since exec; ru_maxrss
    (the fallback elsewhere) also counts the parent's RSS at fork, which inflates small figures."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(codec: str, op: str, src: Path, repeats: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", codec, op, str(src), str(repeats)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise SystemExit(f"{codec} {op} {src}: failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- inputs ---------------------------------------------------------------------------------------------
def make_inputs(val: Path, out: Path, big_mp: float) -> tuple[Path, Path]:
    """A 768x512 crop of a val photo, and a big mosaic of upscaled val photos (3:2)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    photos = sorted(val.glob("*.png"))
    if not photos:
        raise SystemExit(f"{val}: no PNG photos")
    small = out / "768x512.png"
    if not small.exists():
        Image.open(photos[0]).convert("RGB").crop((0, 0, 768, 512)).save(small)
    width = int(round((big_mp * 1e6 * 1.5) ** 0.5 / 8)) * 8
    height = int(round(width / 1.5 / 8)) * 8
    big = out / f"{width}x{height}.png"
    if not big.exists():
        canvas = Image.new("RGB", (width, height))
        tw, th = width // 2, height // 2
        k = 0
        for y in range(0, height, th):
            for x in range(0, width, tw):
                canvas.paste(Image.open(photos[k % len(photos)]).convert("RGB").resize((tw, th), Image.BICUBIC), (x, y))
                k += 1
        canvas.save(big, compress_level=1)
    return small, big


def jobs_scaling(val: Path, n_images: int, jobs: list[int]) -> list[dict]:
    """Wall time of `vq compress` / `vq decompress` on n val photos with each --jobs (CLI, start-up included)."""
    photos = sorted(val.glob("*.png"))[:n_images]
    pixels = 0
    from PIL import Image

    for p in photos:
        with Image.open(p) as im:
            pixels += im.width * im.height
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in photos:
            (src / p.name).symlink_to(p.resolve())
        for n in jobs:
            row = {"jobs": n}
            for op, inp in (("compress", src), ("decompress", Path(tmp) / "vqz")):
                dst = Path(tmp) / ("vqz" if op == "compress" else f"png{n}")
                dst.mkdir(exist_ok=True)
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "vqcli", op, str(inp), "-o", str(dst), "-f", "--jobs", str(n)],
                                   capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                if r.returncode:
                    raise SystemExit(f"vq {op} --jobs {n} failed: {r.stderr.strip()}")
                row[op] = pixels / 1e6 / (time.perf_counter() - t)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val", type=Path, default=ROOT.parent / "shared" / "data" / "val")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench-speed")
    ap.add_argument("--big-mp", type=float, default=24.0)
    ap.add_argument("--repeats", type=int, default=3, help="repeats at 768x512 (median)")
    ap.add_argument("--jobs-images", type=int, default=8)
    ap.add_argument("--vq-quality", type=float, action="append", default=[],
                    help="also measure vq at this quality (repeatable)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], Path(a.child[2]), int(a.child[3]))))
        return
    from rich.progress import Progress

    small, big = make_inputs(a.val, a.out, a.big_mp)
    cores = len(os.sched_getaffinity(0))
    jobs = sorted({1, 2, cores})
    codecs = [*CODECS, *(f"vq -q {q:g}" for q in a.vq_quality)]
    plan = [(c, op, img) for img in (small, big) for c in codecs for op in ("encode", "decode")]
    res: dict[tuple[str, str, Path], dict] = {}
    with Progress(transient=True) as prog:
        task = prog.add_task("bench-speed", total=len(plan) + 1)
        for c, op, img in plan:
            prog.update(task, description=f"{c} {op} {img.stem}")
            res[c, op, img] = run_child(c, op, img, a.repeats if img == small else 1)
            prog.advance(task)
        prog.update(task, description=f"vq --jobs {jobs} on {a.jobs_images} val photos")
        scaling = jobs_scaling(a.val, a.jobs_images, jobs)
        prog.advance(task)

    def mps(r: dict) -> float:
        return r["pixels"] / 1e6 / r["seconds"]

    names = {small: "768x512", big: f"{big.stem} ({a.big_mp:g} MP)"}
    lines = [f"Measured in one run on {cores} cores ({os.uname().machine}); MP/s of the codec call alone, "
             "peak RSS of a fresh process doing it (image file I/O included).", "",
             "| codec | image | encode MP/s | decode MP/s | encode s | decode s | peak RSS enc / dec |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for img in (small, big):
        for c in codecs:
            e, d = res[c, "encode", img], res[c, "decode", img]
            lines.append(f"| {c} | {names[img]} | {mps(e):.2f} | {mps(d):.2f} | {e['seconds']:.3f} | {d['seconds']:.3f} "
                         f"| {e['peak_rss_mb']:.0f} / {d['peak_rss_mb']:.0f} MB |")
    for r in scaling:
        lines.append(f"| vq --jobs {r['jobs']} | {a.jobs_images} val photos (CLI) | {r['compress']:.2f} | "
                     f"{r['decompress']:.2f} | | | |")
    ve, vd = (mps(res["vq", op, big]) / mps(res["vq", op, small]) for op in ("encode", "decode"))
    lines += ["", f"vq per-pixel throughput at {a.big_mp:g} MP / at 768x512: encode {ve:.2f}x, decode {vd:.2f}x; "
              f"--jobs {jobs[-1]} / --jobs 1: compress {scaling[-1]['compress'] / scaling[0]['compress']:.2f}x, "
              f"decompress {scaling[-1]['decompress'] / scaling[0]['decompress']:.2f}x."]
    for c in codecs[len(CODECS):]:
        te, td = (res[c, op, small]["seconds"] / res["vq", op, small]["seconds"] for op in ("encode", "decode"))
        lines.append(f"{c} / vq at the default quality, 768x512: encode {te:.2f}x, decode {td:.2f}x.")
    text = "\n".join(lines)
    (a.out / "bench-speed.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
