"""A small deterministic run of the fuzzer (tools/fuzz.py; `make fuzz` runs the long one):
mutated .vqz files through `vq decompress`'s per-file path and mutated images through the image
reader must end in a decoded image or one clean error: no crash, hang, memory blowup, output
left behind, escaped warning or C library message on stderr."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from fuzz import fuzz_images, fuzz_vqz  # noqa: E402


def test_fuzz_vqz_2000_cases_no_misbehaviour():
    r = fuzz_vqz(2000, seed=13)
    assert r.cases == 2000 and r.bad == 0, "\n".join(r.lines())
    assert r.outcomes["ok"] > 20 and r.outcomes["error"] > 1000  # the mutations reach both ends
    assert len(r.by_mutator) >= 8


def test_fuzz_images_600_cases_no_misbehaviour():
    r = fuzz_images(600, seed=13)
    assert r.cases == 600 and r.bad == 0, "\n".join(r.lines())
    assert r.outcomes["ok"] > 50 and r.outcomes["error"] > 50
