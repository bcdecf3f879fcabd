"""Record a release's default rate (the quality `vq compress` codes at without a rate flag).

    .venv/bin/python tools/set_default_quality.py weights/default.safetensors Q

Choose Q from measurements on training photos (weights/README.md says how the shipped default was
chosen). Tensors and model id are kept.
"""

from __future__ import annotations

import sys

from vqcli.errors import VQError
from vqcli.weights import set_default_quality

if __name__ == "__main__":
    try:
        quality = float(sys.argv[2]) if len(sys.argv) == 3 else None
    except ValueError:
        quality = None
    if quality is None:
        sys.exit(__doc__)
    try:
        set_default_quality(sys.argv[1], quality)
    except VQError as e:
        sys.exit(f"error: {e}")
