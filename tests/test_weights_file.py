"""Weights storage: count tables packed (uint16 or deflated) stand for the same tensors and model id."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

from vqcli.config import PRESETS
from vqcli.errors import VQError
from vqcli.model import VQVAE
from vqcli.weights import (
    BASE,
    COUNT_DEFLATED,
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
    hist[0, 0] = 1 << 16  # one count too large for uint16: this table is deflated
    ctx = torch.randint(0, 1 << 16, (TINY.stages, TINY.codebook_size, TINY.codebook_size), generator=g, dtype=torch.int32)
    return {"histogram": hist, "context": ctx, "code_distance": torch.rand(TINY.stages, generator=g)}


def _wide_release(path: Path, model: VQVAE, stats: dict[str, torch.Tensor]) -> str:
    """A release as the first versions wrote it: every count table in its own dtype."""
    tensors = {k: v.contiguous() for k, v in release_tensors(model, stats).items()}
    mid = model_id_of(tensors)
    path.write_bytes(save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                             "config": TINY.to_json(), "model_id": mid, "training": "{}"}))
    return mid


def test_count_tables_are_stored_packed_and_load_back_wide(tmp_path: Path) -> None:
    model, stats = VQVAE(TINY), _stats()
    mid = save_weights(tmp_path / "w.safetensors", model, TINY, stats)
    stored = load_file(str(tmp_path / "w.safetensors"))
    assert stored["stats.context"].dtype == torch.uint16
    assert stored["stats.histogram"].dtype == torch.uint8 and stored["stats.code_distance"].dtype == torch.float32
    meta = read_safetensors(tmp_path / "w.safetensors")[1]
    assert json.loads(meta[COUNT_DTYPES]) == {"stats.context": "int32"}
    shape = [TINY.stages, TINY.codebook_size]
    assert json.loads(meta[COUNT_DEFLATED]) == {"stats.histogram": {"dtype": "int64", "shape": shape}}
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


def _deflated(values: list[int], dtype: str = "<i8") -> torch.Tensor:
    import numpy as np

    return torch.frombuffer(bytearray(zlib.compress(np.asarray(values, dtype=dtype).tobytes())), dtype=torch.uint8)


@pytest.mark.parametrize("change, problem", [
    (lambda t, m: m.update({COUNT_DEFLATED: "[1]"}), "bad count_dtypes or count_deflated"),
    (lambda t, m: m.update({COUNT_DEFLATED: '{"stats.histogram": {"dtype": "int8", "shape": [2]}}'}), "bad entry"),
    (lambda t, m: m.update({COUNT_DEFLATED: '{"stats.histogram": {"dtype": "int64", "shape": [65536, 65536]}}'}),
     "bad entry"),
    (lambda t, m: t.update({"stats.histogram": torch.zeros(3, dtype=torch.int64)}), "not a deflated uint8 table"),
    (lambda t, m: t.update({"stats.histogram": torch.arange(40, dtype=torch.uint8)}), "does not inflate"),
    (lambda t, m: t.update({"stats.histogram": _deflated([1, 2, 3])}), "inflates to other than"),
    (lambda t, m: t.update({"stats.histogram": _deflated([0] * 10 ** 6)}), "inflates to other than"),  # a bomb
])
def test_a_bad_deflated_table_is_a_one_line_error(tmp_path: Path, change, problem: str) -> None:
    save_weights(tmp_path / "w.safetensors", VQVAE(TINY), TINY, _stats())
    tensors, meta = read_safetensors(tmp_path / "w.safetensors")
    change(tensors, meta)
    (tmp_path / "bad.safetensors").write_bytes(save(tensors, metadata=meta))
    with pytest.raises(VQError, match=problem) as e:
        load_weights(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(e.value) and "\n" not in str(e.value)


def _base_and_derived(tmp_path: Path) -> tuple[Path, Path, str]:
    """A complete release and a second one of the same network with other statistics."""
    model = VQVAE(TINY)
    save_weights(tmp_path / "base.safetensors", model, TINY, _stats())
    stats = {**_stats(), "histogram": torch.ones(TINY.stages, TINY.codebook_size, dtype=torch.int64)}
    mid = save_weights(tmp_path / "derived.safetensors", model, TINY, stats)
    return tmp_path / "base.safetensors", tmp_path / "derived.safetensors", mid


def test_a_release_on_a_base_stores_only_its_own_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, derived, mid = _base_and_derived(tmp_path)
    before = load_weights(derived)
    got, size0, size1 = compact_weights(derived, base=base)
    stored, meta = read_safetensors(derived)
    assert got == mid and size1 < size0 and meta[BASE] == load_weights(base).model_id
    assert set(stored) == {"stats.histogram"}  # the network and the equal tables come from the base
    after = load_weights(derived)
    assert after.model_id == mid
    for k, v in before.model.state_dict().items():
        assert torch.equal(after.model.state_dict()[k], v), k
    for k, v in before.stats.items():
        assert after.stats[k].dtype == v.dtype and torch.equal(after.stats[k], v), k
    # Alone, it names the base it lacks; found on the weights search path, it loads again.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "d.safetensors").write_bytes(derived.read_bytes())
    with pytest.raises(VQError, match=f"d.safetensors: builds on model {meta[BASE]}, and no weights") as e:
        load_weights(alone / "d.safetensors")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("VQ_WEIGHTS_PATH", str(tmp_path))
    assert load_weights(alone / "d.safetensors").model_id == mid


def test_a_base_must_be_complete_and_intact(tmp_path: Path) -> None:
    base, derived, _ = _base_and_derived(tmp_path)
    compact_weights(derived, base=base)
    with pytest.raises(VQError, match="has a base itself"):
        compact_weights(base, base=derived)
    # A base whose tensors are not those of its id: the derived file refuses it.
    tensors, meta = read_safetensors(base)
    tensors["decoder.net.0.bias"] = tensors["decoder.net.0.bias"] + 1
    base.write_bytes(save(tensors, metadata=meta))
    with pytest.raises(VQError, match="base.safetensors: corrupt weights \\(model id"):
        load_weights(derived)
