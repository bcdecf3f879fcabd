"""Rewrite release weights compactly (vqcli.weights.compact_weights): count tables packed
(as uint16 where they fit, deflated where not) and, with --base, without the tensors a complete
release of the same network already holds. Enhancement layers' files are packed too
(vqcli.enhancecoding.compact_enhancement).

    .venv/bin/python tools/compact_weights.py weights/*.safetensors weights/enhance/*.safetensors
    .venv/bin/python tools/compact_weights.py weights/2241fcccc73567f1.safetensors \\
        --base weights/5e93618b9ecfe707.safetensors

The model id and every tensor the loader returns stay the same, so every .vqz written with a
release keeps decoding (the golden tests check it); only the stored bytes shrink. A file with a
base loads only where the base is found (its own folder first): keep them together.
"""

from __future__ import annotations

import argparse

from vqcli.enhancecoding import KIND, compact_enhancement
from vqcli.weights import compact_weights
from vqcli.weightspath import read_metadata


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--base", help="a complete release whose equal tensors the files leave out")
    args = ap.parse_args()
    for path in args.weights:
        if (read_metadata(path) or {}).get("format") == KIND:
            if args.base is not None:
                raise SystemExit(f"{path}: an enhancement layer is packed without --base")
            mid, before, after = compact_enhancement(path)
        else:
            mid, before, after = compact_weights(path, base=args.base)
        print(f"{path}: model {mid}, {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
