"""The enhanced ladder's raw material: mean bpp and PSNR of (base quality, layer level, dead zone)
over a set of photos, and the convex hull of the mean curve (the points a ladder should pass
through). Measure on training photos, never on val.

    .venv/bin/python tools/ladder_grid.py ../shared/data/train ../shared/data/permissive \
        --per-folder 4,4,4,4,12 --out runs/ladder_grid.jsonl

Each folder (or, recursively, its subfolders with images) gives --per-folder photos spread over
its sorted list, cropped to their top-left 512 x 384. Real file sizes (base and layer), effort 1.
A rerun appends to --out and skips the photos already there; --hull only reads it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def pick(folders: list[Path], per_folder: list[int]) -> list[Path]:
    from vqcli.images import find_images

    groups = []
    for f in folders:
        subs = sorted(d for d in f.iterdir() if d.is_dir())
        groups += [find_images(d) for d in subs] if subs else [find_images(f)]
    out = []
    for files, n in zip(groups, per_folder * len(groups) if len(per_folder) == 1 else per_folder):
        out += files[len(files) // (2 * n)::max(1, len(files) // n)][:n]
    return out


def measure(files: list[Path], weights: str, out: Path, bqs: list[float], levels: list[float],
            deadzones: list[float]) -> None:
    from vqcli import codec, metrics
    from vqcli.format import LEVEL_ONE
    from vqcli.images import LoadedImage, load_image
    from vqcli.weights import load_weights

    w = load_weights(weights)
    em = codec.entropy_model(w)
    done = {json.loads(line)["file"] for line in out.open()} if out.exists() else set()
    with out.open("a") as log:
        for f in files:
            if str(f) in done:
                continue
            rgb = np.ascontiguousarray(load_image(f).rgb[:384, :512])
            enc = codec.ImageEncoder(w, em, LoadedImage(rgb, None, "RGB"), "RGB", 1, enhance=True)
            for bq in bqs:
                rows = [(None, None, enc.adaptive(bq))]
                rows += [(lv, dz, enc.enhanced(bq, round(lv * LEVEL_ONE), dz)) for lv in levels for dz in deadzones]
                for lv, dz, c in rows:
                    log.write(json.dumps({"file": str(f), "bq": bq, "lv": lv, "dz": dz, "bpp": enc.bpp(c),
                                          "psnr": metrics.psnr(rgb, enc.decode(c))}) + "\n")
            log.flush()
            print(f, flush=True)


def hull(points: dict[tuple, tuple[float, float]]) -> list[tuple[tuple, tuple[float, float]]]:
    """The upper convex hull, by rate, of {setting: (bpp, psnr)}."""
    h: list[tuple[tuple, tuple[float, float]]] = []
    for k, (b, p) in sorted(points.items(), key=lambda kv: kv[1][0]):
        if h and p <= h[-1][1][1]:
            continue
        while len(h) >= 2:
            (_, (b1, p1)), (_, (b2, p2)) = h[-2], h[-1]
            if (p2 - p1) * (b - b1) > (p - p1) * (b2 - b1):
                break
            h.pop()
        h.append((k, (b, p)))
    return h


def report(out: Path) -> None:
    recs = [json.loads(line) for line in out.open()]
    per_file = defaultdict(int)
    for r in recs:
        per_file[r["file"]] += 1
    complete = {f for f, n in per_file.items() if n == max(per_file.values())}
    acc = defaultdict(list)
    for r in recs:
        if r["file"] in complete:
            acc[(r["bq"], r["lv"], r["dz"])].append((r["bpp"], r["psnr"]))
    means = {k: tuple(np.mean(v, 0)) for k, v in acc.items()}
    print(f"{len(complete)} photos; hull (base quality, level, dead zone): bpp, PSNR")
    for k, (b, p) in hull(means):
        print(f"  {k}: {b:.3f}, {p:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--per-folder", default="4", help="photos per folder (one count, or one per folder)")
    ap.add_argument("--weights", default="weights/default.safetensors")
    ap.add_argument("--out", type=Path, default=Path("runs/ladder_grid.jsonl"))
    ap.add_argument("--base-qualities", default="50,55,60,65,70,80,90,100")
    ap.add_argument("--levels", default="0,1,2,3,4,5")
    ap.add_argument("--deadzones", default="0,0.15,0.3")
    ap.add_argument("--hull", action="store_true", help="only report the hull of --out")
    a = ap.parse_args()
    floats = lambda s: [float(v) for v in s.split(",")]  # noqa: E731
    if not a.hull:
        files = pick(a.folders, [int(n) for n in a.per_folder.split(",")])
        measure(files, a.weights, a.out, floats(a.base_qualities), floats(a.levels), floats(a.deadzones))
    report(a.out)


if __name__ == "__main__":
    main()
