"""The shipped default model: it is in the repository, it is the release weights/README.md
documents, and with no rate flag it beats JPEG on a crop of the demo photo.

(The demo photo is part of the training set, so this guards the release against regressions;
the held-out measurement is `vq eval` on val, reported in the README.)
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from vqcli.codec import compress, decompress, default_quality
from vqcli.images import decode_image, load_image
from vqcli.metrics import psnr
from vqcli.rate import ENHANCED_DEFAULT_QUALITY

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_weights_are_the_documented_release(shipped):
    documented = re.search(r"model id `([0-9a-f]{16})`", (ROOT / "weights" / "README.md").read_text())
    assert documented and shipped.model_id == documented.group(1)
    assert default_quality(shipped) == ENHANCED_DEFAULT_QUALITY  # the shipped model has a layer
    hist = shipped.histogram
    assert hist.shape == (shipped.config.stages, shipped.config.codebook_size)
    assert bool((hist > 0).all()), "a stage has a code never used on the training data"


def test_default_rate_beats_jpeg_on_sample_crop(shipped):
    rgb = load_image(ROOT / "docs" / "sample" / "ladybird.jpg").rgb[151:272, 300:501]  # 121 x 201: padded
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    result = compress(shipped, decode_image(png.getvalue(), "crop.png"))
    assert result.quality == default_quality(shipped) and result.stages > 1 and result.enhancement is not None
    decoded = decompress(shipped, result.data)
    assert decoded.rgb.shape == rgb.shape
    kept = decoded.indices >= 0
    assert kept[0].all()  # stage 1 everywhere
    quality = psnr(rgb, decoded.rgb)
    for q in range(5, 96):  # the smallest JPEG at least as good
        jpeg = io.BytesIO()
        Image.fromarray(rgb).save(jpeg, "JPEG", quality=q)
        if psnr(rgb, np.asarray(Image.open(jpeg).convert("RGB"))) >= quality:
            break
    assert len(result.data) < jpeg.tell(), (len(result.data), jpeg.tell(), q, quality)
