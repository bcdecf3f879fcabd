"""Build the compact training set that travels with a GPU burst (`make gpu-cache`).

A lent GPU machine takes at most 64 MiB of files, the repository included, so the training
folders are packed small: the permissive tiles (lossless WebP, 78 MB) become JPEG q95 with full
chroma (about 32 MB; its error, about 42-45 dB, is far below what the model reconstructs), and
JPEG sources are copied as they are. Only permissive data goes in, so that weights trained on it
carry no research-only licence; the attribution files travel with it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vqcli.images import find_images  # noqa: E402


def pack(sources: list[Path], out: Path, quality: int = 95) -> tuple[int, int]:
    """Copy or re-encode every image below `sources` into `out`; (files, bytes) written."""
    out.mkdir(parents=True, exist_ok=True)
    n = size = 0
    for root in sources:
        for f in find_images(root):
            dest = out / f"{root.name}_{f.stem}.jpg"
            if f.suffix.lower() in (".jpg", ".jpeg"):
                shutil.copyfile(f, dest)
            else:
                with Image.open(f) as im:
                    im.convert("RGB").save(dest, "JPEG", quality=quality, subsampling=0)
            n, size = n + 1, size + dest.stat().st_size
        for doc in ("ATTRIBUTION.md", "LICENSE", "README.md"):
            if (root / doc).is_file():
                shutil.copyfile(root / doc, out / f"{root.name}_{doc}")
    return n, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", type=Path, help="training folders (permissive data only)")
    ap.add_argument("--out", type=Path, default=Path(".gpu/data"))
    ap.add_argument("--quality", type=int, default=95)
    a = ap.parse_args()
    n, size = pack(a.sources, a.out, a.quality)
    print(f"{a.out}: {n} images, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
