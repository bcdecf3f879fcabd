"""Weights storage: count tables packed as uint16 stand for the same tensors and model id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

from vqcli.config import PRESETS
from vqcli.errors import VQError
from vqcli.model import VQVAE
from vqcli.weights import (
    COUNT_DTYPES,
    FORMAT,
    FORMAT_VERSION,
    compact_weights,
    load_weights,
    model_id_of,
    read_safetensors,
    release_tensors,
    save_weights,
)

TINY = PRESETS["tiny"]


def _stats() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(0, 50, (TINY.stages, TINY.codebook_size), generator=g)
    hist[0, 0] = 1 << 16  # one count too large for uint16: this table stays int64
    ctx = torch.randint(0, 1 << 16, (TINY.stages, TINY.codebook_size, TINY.codebook_size), generator=g, dtype=torch.int32)
    return {"histogram": hist, "context": ctx, "code_distance": torch.rand(TINY.stages, generator=g)}


def _wide_release(path: Path, model: VQVAE, stats: dict[str, torch.Tensor]) -> str:
    """A release as the first versions wrote it: every count table in its own dtype."""
    tensors = {k: v.contiguous() for k, v in release_tensors(model, stats).items()}
    mid = model_id_of(tensors)
    path.write_bytes(save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                             "config": TINY.to_json(), "model_id": mid, "training": "{}"}))
    return mid


def test_count_tables_fitting_uint16_are_stored_so_and_load_back_wide(tmp_path: Path) -> None:
    model, stats = VQVAE(TINY), _stats()
    mid = save_weights(tmp_path / "w.safetensors", model, TINY, stats)
    stored = load_file(str(tmp_path / "w.safetensors"))
    assert stored["stats.context"].dtype == torch.uint16
    assert stored["stats.histogram"].dtype == torch.int64 and stored["stats.code_distance"].dtype == torch.float32
    assert json.loads(read_safetensors(tmp_path / "w.safetensors")[1][COUNT_DTYPES]) == {"stats.context": "int32"}
    w = load_weights(tmp_path / "w.safetensors")
    assert w.stats["context"].dtype == torch.int32 and torch.equal(w.stats["context"], stats["context"])
    assert torch.equal(w.histogram, stats["histogram"]) and torch.equal(w.stats["code_distance"], stats["code_distance"])
    # The model id is that of the wide tensors: the same model stored the old way has the same id.
    assert w.model_id == mid == _wide_release(tmp_path / "wide.safetensors", model, stats)


def test_compacting_an_old_release_keeps_its_model_id_and_tensors(tmp_path: Path) -> None:
    model, stats = VQVAE(TINY), _stats()
    src = tmp_path / "wide.safetensors"
    mid = _wide_release(src, model, stats)
    before = load_weights(src)
    got, size0, size1 = compact_weights(src, tmp_path / "packed.safetensors")
    assert got == mid and size1 < size0 == src.stat().st_size
    after = load_weights(tmp_path / "packed.safetensors")
    assert after.model_id == mid
    for k, v in before.stats.items():
        assert after.stats[k].dtype == v.dtype and torch.equal(after.stats[k], v), k
    assert compact_weights(tmp_path / "packed.safetensors")[2] == size1  # in place, nothing left to pack


@pytest.mark.parametrize("dtypes, problem", [
    ("[1, 2]", "bad count_dtypes"),
    ('{"stats.context": "int8"}', "expected a uint16 count table"),
    ('{"stats.context": "int32", "stats.nothing": "int32"}', "expected a uint16 count table"),
    (None, "does not name its dtype"),
])
def test_bad_count_dtypes_is_a_one_line_error(tmp_path: Path, dtypes: str | None, problem: str) -> None:
    save_weights(tmp_path / "w.safetensors", VQVAE(TINY), TINY, _stats())
    tensors, meta = read_safetensors(tmp_path / "w.safetensors")
    meta.pop(COUNT_DTYPES)
    if dtypes is not None:
        meta[COUNT_DTYPES] = dtypes
    (tmp_path / "bad.safetensors").write_bytes(save(tensors, metadata=meta))
    with pytest.raises(VQError, match=problem) as e:
        load_weights(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(e.value) and "\n" not in str(e.value)
