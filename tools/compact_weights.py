"""Rewrite release weights with their count tables stored as uint16 (vqcli.weights.compact_weights).

    .venv/bin/python tools/compact_weights.py weights/*.safetensors

The model id and every tensor the loader returns stay the same, so every .vqz written with a
release keeps decoding (the golden tests check it); only the stored bytes shrink.
"""

from __future__ import annotations

import argparse

from vqcli.weights import compact_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    for path in ap.parse_args().weights:
        mid, before, after = compact_weights(path)
        print(f"{path}: model {mid}, {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
