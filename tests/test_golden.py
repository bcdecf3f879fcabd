"""Golden files: committed .vqz files must decode to exactly the committed indices and pixels,
and their indices must re-encode to exactly the same bytes, so that any change of the format,
the entropy tables, constriction's coder or the model's decoder shows up here.

The fixtures come from tools/make_golden.py (tiny weights committed beside them, and the
shipped weights). Pixels are compared by hash: measured identical with 1 and 2 threads here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import decode_with_threads

from vqcli import format as vqz
from vqcli.codec import pack
from vqcli.enhancecoding import ENHANCE_DIR
from vqcli.weights import load_weights
from vqcli.weightspath import read_metadata

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
RECORD = json.loads((GOLDEN / "golden.json").read_text())


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def weights():
    return {p: load_weights(ROOT / p, "cpu") for p in {r["weights"] for r in RECORD.values()}}


def test_golden_set_covers_both_weights_both_entropy_models_and_alpha():
    assert {r["entropy"] for r in RECORD.values()} == {"static", "context", "spatial"}
    # Every release shipped so far: the former defaults (kept under their ids) and today's.
    assert {r["weights"] for r in RECORD.values()} == {"tests/golden/tiny.safetensors", "weights/default.safetensors",
                                                     "weights/5e93618b9ecfe707.safetensors",
                                                     "weights/2241fcccc73567f1.safetensors",
                                                     "weights/89cbeca6f8a5434f.safetensors",
                                                     "weights/ms-ssim.safetensors", "weights/hifi.safetensors"}
    assert any(r["alpha_sha256"] for r in RECORD.values())
    # every layout: uniform stages (format 1), a stage map (2), flat cells and padded stages (3),
    # an enhancement layer (4)
    assert {vqz.read_header((GOLDEN / name).read_bytes()).version for name in RECORD} == {1, 2, 3, 4}
    # and every shipped enhancement layer, the default and the former ones kept under their ids
    layers = {read_metadata(p)["model_id"] for p in (ROOT / "weights" / ENHANCE_DIR).glob("*.safetensors")}
    assert layers and layers <= {r.get("enhancement") for r in RECORD.values()}


@pytest.mark.parametrize("name", sorted(RECORD))
@pytest.mark.parametrize("threads", [1, 2])
def test_golden_file_decodes_exactly(weights, name, threads):
    rec = RECORD[name]
    w = weights[rec["weights"]]
    assert w.model_id == rec["model_id"]
    data = (GOLDEN / name).read_bytes()
    dec = decode_with_threads(w, data, threads, name=name)
    assert [dec.header.width, dec.header.height] == rec["size"]
    assert (dec.header.mode, dec.header.entropy, dec.stages) == (rec["mode"], rec["entropy"], rec["stages"])
    assert sha(dec.indices) == rec["indices_sha256"]
    assert sha(dec.rgb) == rec["pixels_sha256"]
    assert (None if dec.alpha is None else sha(dec.alpha)) == rec["alpha_sha256"]
    assert (None if dec.enhancement is None else dec.enhancement.model_id) == rec.get("enhancement")
    # The encoder side: the same indices give the same bytes.
    alpha = dec.alpha
    assert pack(w, dec.indices, dec.header.width, dec.header.height, alpha, dec.header.mode,
                rec["entropy"], flat=dec.flat, enhancement=dec.enhancement) == data
