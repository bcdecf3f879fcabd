"""Write the golden fixtures of tests/golden/ (run once; the committed files are the reference).

- tiny.safetensors: the `tiny` preset trained deterministically (CPU, one thread, fixed seed)
  for 40 steps on generated images, a few KB;
- *.vqz: small generated images coded with it and with every shipped release (weights/<id>.safetensors),
  static, context and spatial entropy models, one with alpha, one grey, two with each of the
  default's enhancement layers (weights/enhance/; its id is in the file); only missing files are
  written (a golden file is a reference, never regenerated for a release);
- golden.json: per file, the weights, the sha256 of its decoded indices (int64, C order) and of
  its decoded pixels (RGB uint8, then alpha).

Usage: PYTHONPATH=. python tools/make_golden.py [--weights-too]
tests/test_golden.py checks that today's code decodes every file to exactly these hashes and
re-encodes the decoded indices to exactly the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_image  # noqa: E402  (the tests' own image generator)

GOLDEN = ROOT / "tests" / "golden"
TINY = "tests/golden/tiny.safetensors"
# Shipped releases: a former default keeps its file as weights/<model id>.safetensors (rename it there,
# and its entries in golden.json, when a new default ships): its golden files must decode forever.
V1 = "weights/5e93618b9ecfe707.safetensors"
V2 = "weights/2241fcccc73567f1.safetensors"
V3 = "weights/89cbeca6f8a5434f.safetensors"
DEFAULT = "weights/default.safetensors"  # model 30f7454c79c94f5e
MS_SSIM = "weights/ms-ssim.safetensors"  # model 19e2603ef9043287, shipped beside the default
HIFI = "weights/hifi.safetensors"  # model 6e9bf54d56613ce1, the widened default (24 stages), shipped beside it
# name: (weights, height, width, seed, entropy, alpha, grey[, quality: a stage map (format 2); else all stages])
CASES = {
    "tiny_static.vqz": (TINY, 32, 48, 1, "static", False, False),
    "tiny_context_alpha.vqz": (TINY, 48, 40, 2, "context", True, False),
    "shipped_context.vqz": (V1, 64, 64, 3, "context", False, False),
    "shipped_static_grey_alpha.vqz": (V1, 40, 56, 4, "static", True, True),
    "shipped_spatial.vqz": (V2, 64, 72, 5, "spatial", False, False),
    "shipped3_spatial_alpha.vqz": (V3, 56, 80, 6, "spatial", True, False),
    "shipped3_stagemap.vqz": (V3, 64, 96, 8, "spatial", False, False, 50),
    "default_stagemap_alpha.vqz": (DEFAULT, 72, 104, 9, "spatial", True, False, 45),
    "ms-ssim_stagemap.vqz": (MS_SSIM, 64, 88, 10, "spatial", False, False, 45),
    "hifi_stagemap.vqz": (HIFI, 72, 96, 11, "spatial", False, False, 80),
    # format 3: images with flat regions painted on (flat cells), at a quality and at uniform stages
    "default_flat_alpha.vqz": (DEFAULT, 72, 104, 12, "spatial", True, False, 45),
    "hifi_flat.vqz": (HIFI, 64, 80, 13, "spatial", False, False, 70),
    "tiny_flat_stages.vqz": (TINY, 40, 56, 14, "context", False, False),
    # format 4: the default with its shipped enhancement layer (weights/enhance/), flat cells too
    "default_enhanced_flat.vqz": (DEFAULT, 64, 88, 15, "spatial", False, False, 90),
    "default_enhanced.vqz": (DEFAULT, 56, 72, 16, "spatial", True, False, 70),
    # the second layer (same-channel contexts; the first stays as weights/enhance/e8d2bfc30623bb58.safetensors)
    "default_enhanced2.vqz": (DEFAULT, 64, 80, 17, "spatial", False, False, 80),
    "default_enhanced2_flat.vqz": (DEFAULT, 48, 64, 18, "spatial", True, False, 100),
    # the third layer (four passes, predictor; the second stays as weights/enhance/2eb11cc81d382925.safetensors)
    "default_enhanced3.vqz": (DEFAULT, 72, 64, 19, "spatial", False, False, 75),
    "default_enhanced3_flat.vqz": (DEFAULT, 56, 80, 20, "spatial", True, False, 95),
    # the fourth layer (the third's network trained further; the third stays as weights/enhance/fc2352681b156c66.safetensors)
    "default_enhanced4.vqz": (DEFAULT, 64, 72, 21, "spatial", False, False, 65),
    "default_enhanced4_flat.vqz": (DEFAULT, 72, 56, 22, "spatial", True, False, 85),
    # the fifth layer (the fourth with its synthesis tuned; the fourth stays as weights/enhance/622724a37f4fa22e.safetensors)
    "default_enhanced5.vqz": (DEFAULT, 56, 64, 23, "spatial", False, False, 70),
    "default_enhanced5_flat.vqz": (DEFAULT, 64, 48, 24, "spatial", True, False, 90),
    # the sixth layer (the fifth with a light synthesis; the fifth stays as weights/enhance/834be7664f439036.safetensors)
    "default_enhanced6.vqz": (DEFAULT, 64, 56, 25, "spatial", False, False, 67),
    "default_enhanced6_flat.vqz": (DEFAULT, 56, 72, 26, "spatial", True, False, 95),
}
FLAT = {name for name in CASES if "_flat" in name}
PADDED = "tiny_padded.vqz"  # format 3's padded stage chunks: all-zero indices, packed (tiny, static)


def train_tiny(out: Path) -> None:
    from vqcli.config import PRESETS, TrainConfig
    from vqcli.train import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        sizes = [(64, 96), (80, 80), (48, 72), (96, 64), (24, 40), (72, 120), (64, 64), (56, 88)]
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(make_image(h, w, i)).save(Path(d) / f"img{i}.png")
        tcfg = TrainConfig(steps=40, batch_size=8, crop=32, lr=3e-3, warmup=5, workers=0, ckpt_every=1000,
                           val_every=1000, seed=0)
        train(Path(d), out, PRESETS["tiny"], tcfg, device="cpu", progress=False)
        out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors").unlink()


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def image(h: int, w: int, seed: int, alpha: bool, grey: bool, flat: bool = False):
    from vqcli.images import LoadedImage

    rgb = make_image(h, w, seed)
    if flat:
        rgb[:, :w // 2] = (250, 250, 250)
        rgb[h // 2:, w * 3 // 4:] = (10, 60, 200)
    mode = "RGB"
    if grey:
        rgb = np.repeat(rgb.mean(2).astype(np.uint8)[:, :, None], 3, axis=2)
        mode = "L"
    a = None
    if alpha:
        yy, xx = np.mgrid[:h, :w]
        a = np.clip(255 - 4 * np.hypot(yy - h / 2, xx - w / 2), 0, 255).astype(np.uint8)
        mode = "LA" if grey else "RGBA"
    return LoadedImage(rgb, a, mode)


def write(name: str, path: str, wt, data: bytes, entropy: str) -> dict:
    """Write a golden file; its record."""
    from vqcli.codec import decompress

    (GOLDEN / name).write_bytes(data)
    dec = decompress(wt, data)
    h = dec.header
    print(name, len(data), "bytes, format", h.version)
    return {"weights": path, "model_id": wt.model_id, "size": [h.width, h.height], "mode": h.mode, "entropy": entropy,
            "stages": dec.stages, "indices_sha256": sha(dec.indices), "pixels_sha256": sha(dec.rgb),
            "alpha_sha256": None if dec.alpha is None else sha(dec.alpha),
            **({} if dec.enhancement is None else {"enhancement": dec.enhancement.model_id})}


def main() -> None:
    from vqcli.codec import compress, pack
    from vqcli.weights import load_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights-too", action="store_true", help="retrain tests/golden/tiny.safetensors")
    ap.add_argument("--all", action="store_true", help="rewrite existing golden files too (never for a release)")
    args = ap.parse_args()
    if args.weights_too or not (ROOT / TINY).exists():
        train_tiny(ROOT / TINY)
    index = GOLDEN / "golden.json"
    record = json.loads(index.read_text()) if index.exists() and not args.all else {}
    for name, (path, h, w, seed, entropy, alpha, grey, *quality) in CASES.items():
        if name in record:  # a golden file is a reference: written once
            continue
        wt = load_weights(ROOT / path)
        rate = {"quality": quality[0]} if quality else {"stages": wt.config.stages}
        res = compress(wt, image(h, w, seed, alpha, grey, name in FLAT), entropy=entropy, **rate)
        record[name] = write(name, path, wt, res.data, entropy)
    if PADDED not in record:
        wt = load_weights(ROOT / TINY)
        f = wt.config.downsample
        data = pack(wt, np.zeros((wt.config.stages, 30, 40), dtype=np.int64), 40 * f, 30 * f, entropy="static")
        record[PADDED] = write(PADDED, TINY, wt, data, "static")
    index.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
