"""Recollect a release's index statistics (histograms, context and spatial counts) over a folder of
training images and write them with the same network as new release weights.

    .venv/bin/python tools/recollect_stats.py weights/default.safetensors ../shared/data/train OUT.safetensors

What it is for: giving an existing model the counts of an entropy model added after it was
trained (the spatial model), without retraining. The network tensors are copied unchanged (fp16
stays fp16); the stats change, so the model id changes: keep the old file beside the new one, so
that files written with it keep decoding (vq finds weights by the id in a file's header). The
training summary and default_quality are carried over.
"""

from __future__ import annotations

import argparse
import json

import torch
from rich.progress import Progress

from vqcli.data import usable_images
from vqcli.indexcounts import collect_index_counts
from vqcli.weights import load_weights, read_safetensors, save_weights, set_default_quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("data")
    ap.add_argument("out")
    a = ap.parse_args()
    w = load_weights(a.weights, "cpu")
    tensors, meta = read_safetensors(w.path)
    half = any(t.dtype == torch.float16 for t in tensors.values())
    files = usable_images(a.data)
    with Progress(transient=True) as p:
        task = p.add_task("index statistics", total=len(files))
        stats = collect_index_counts(w.model, files, on_image=lambda _: p.advance(task))
    old = {k: v for k, v in w.stats.items() if k in stats and v.shape == stats[k].shape}
    same = sorted(k for k, v in old.items() if torch.equal(v.to(stats[k].dtype), stats[k]))
    training = {**w.training, "stats_recollected": {"from_model": w.model_id, "images": len(files),
                                                    "unchanged": same, "added": sorted(set(stats) - set(w.stats))}}
    mid = save_weights(a.out, w.model, w.config, stats, training, half=half)
    if w.named_default is not None:
        set_default_quality(a.out, w.named_default)
    print(json.dumps({"model_id": mid, **training["stats_recollected"]}))


if __name__ == "__main__":
    main()
