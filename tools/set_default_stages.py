"""Record a release's default rate (the stages `vq compress` keeps without a rate flag).

    .venv/bin/python tools/set_default_stages.py weights/default.safetensors N

Choose N from `vq eval` on held-out images: the shipped model's default is the most stages whose
mean saving over JPEG at equal PSNR is still at least 10% (weights/README.md). Tensors and model id
are kept.
"""

from __future__ import annotations

import sys

from vqcli.errors import VQError
from vqcli.weights import set_default_stages

if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit(__doc__)
    try:
        set_default_stages(sys.argv[1], int(sys.argv[2]))
    except VQError as e:
        sys.exit(f"error: {e}")
