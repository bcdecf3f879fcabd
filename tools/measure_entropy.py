"""Measure the entropy coder on held-out images: coded vs ideal size, static vs context model.

    nice -n 15 .venv/bin/python tools/measure_entropy.py WEIGHTS VAL_DIR [--limit N] [--skip N] [--pseudo P ...]

For each image all S stages are encoded, then coded with the static prior and with the context
model (for each pseudo-count strength); prints per-stage and total bits per index, the ratio of
coded to ideal size (-sum log2 p under the same integer tables) and the context model's saving.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vqcli.codec import encode_indices
from vqcli.entropy import PSEUDO, build_model
from vqcli.images import find_images, load_image
from vqcli.weights import load_weights


def measure(weights_path: Path, val_dir: Path, limit: int = 10, pseudos: tuple[int, ...] = (PSEUDO,),
            skip: int = 0) -> dict:
    w = load_weights(weights_path, "cpu")
    models = {"static": build_model(w.stats, "static")}
    if "context" in w.stats:
        models.update({f"context(pseudo={p})": build_model(w.stats, "context", p) for p in pseudos})
    S = w.config.stages
    coded = {k: np.zeros(S) for k in models}
    ideal = {k: np.zeros(S) for k in models}
    n_idx = 0
    files = find_images(val_dir)[skip:skip + limit]
    for f in files:
        idx = encode_indices(w, load_image(f).rgb)
        n_idx += idx[0].size
        for name, em in models.items():
            for s in range(S):
                prev = idx[s - 1] if s else None
                coded[name][s] += 8 * len(em.encode_stage(s, idx[s], prev))
                ideal[name][s] += em.ideal_bits(s, idx[s], prev)
    out = {"weights": str(weights_path), "model_id": w.model_id, "images": len(files), "indices_per_stage": n_idx,
           "models": {}}
    base = coded["static"].sum()
    for name in models:
        out["models"][name] = {
            "bits_per_index_by_stage": [round(x, 4) for x in coded[name] / n_idx],
            "coded_bits": int(coded[name].sum()), "ideal_bits": round(float(ideal[name].sum()), 1),
            "coded_over_ideal": round(float(coded[name].sum() / ideal[name].sum()), 5),
            "saving_vs_static_pct": round(float(100 * (1 - coded[name].sum() / base)), 2),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("val", type=Path)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--skip", type=int, default=0, help="start at the N-th image (sorted)")
    ap.add_argument("--pseudo", type=int, nargs="*", default=[PSEUDO])
    a = ap.parse_args()
    print(json.dumps(measure(a.weights, a.val, a.limit, tuple(a.pseudo), a.skip), indent=1))


if __name__ == "__main__":
    main()
