"""The GPU tools' CPU halves: the training burst's dry run, the data cache, check-cuda without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vqcli.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def _joined(out: Path, name: str) -> Path:
    summary = json.loads((out / f"{name}.json").read_text())
    whole = out / f"{name}.safetensors"
    whole.write_bytes(b"".join((out / p).read_bytes() for p in summary["parts"]))
    assert load_weights(whole).model_id == summary["model_id"]
    return whole


def test_train_gpu_dry_run_writes_a_release_in_parts(image_dir, tmp_path):
    out = tmp_path / "o"
    r = _run("tools/train_gpu.py", "--data", str(image_dir), "--out", str(out), "--dry-run", "--preset", "tiny",
             "--part-mib", "0.01")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "hifi.json").read_text())
    assert len(summary["parts"]) > 1 and summary["planned_steps"] == 3 and summary["cut_at"] is None
    assert load_weights(_joined(out, "hifi")).config.stages == 3


def test_train_gpu_cuts_an_overlong_run_at_a_checkpoint(image_dir, tmp_path):
    out = tmp_path / "o"
    r = _run("tools/train_gpu.py", "--data", str(image_dir), "--out", str(out), "--dry-run", "--preset", "tiny",
             "--steps", "50", "--seconds", "0.01", "--grace", "0", "--name", "cut")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "cut.json").read_text())
    assert summary["planned_steps"] == 50 and 1 <= summary["cut_at"] < 50 and "over time" in r.stdout
    assert load_weights(_joined(out, "cut")).training["steps"] == summary["cut_at"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_train_gpu_without_cuda_says_so(image_dir, tmp_path):
    r = _run("tools/train_gpu.py", "--data", str(image_dir), "--out", str(tmp_path))
    assert r.returncode == 1 and "no CUDA device" in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_check_cuda_without_cuda_runs_the_cpu_halves_and_passes(tmp_path):
    r = _run("tools/check_cuda.py", "--out", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no CUDA device here" in r.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and not report["cuda"] and report["sample"]["bytes"] > 0 and "skipped" in report["tests"]["summary"]


def test_gpu_cache_packs_images_small(tmp_path):
    src = tmp_path / "permissive"
    src.mkdir()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(src / "a.webp", lossless=True)
    Image.new("RGB", (32, 32), (200, 10, 30)).save(src / "b.jpg")
    (src / "ATTRIBUTION.md").write_text("credits")
    r = _run("tools/make_gpu_cache.py", str(src), "--out", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert names == ["permissive_ATTRIBUTION.md", "permissive_a.jpg", "permissive_b.jpg"]
    assert (tmp_path / "cache" / "permissive_b.jpg").read_bytes() == (src / "b.jpg").read_bytes()
    assert Image.open(tmp_path / "cache" / "permissive_a.jpg").size == (64, 48)


def test_train_gpu_dry_run_widens_the_shipped_kind_of_model(image_dir, tiny_weights, tmp_path):
    out = tmp_path / "o"
    r = _run("tools/train_gpu.py", "--data", str(image_dir), "--out", str(out), "--dry-run", "--preset", "tiny",
             "--init", str(tiny_weights), "--widen")
    assert r.returncode == 0, r.stderr
    w = load_weights(_joined(out, "hifi"))
    assert w.training["init"] == load_weights(tiny_weights).model_id


def test_train_enhance_dry_run_continues_a_layer_and_writes_one(image_dir, tiny_weights, tmp_path):
    from vqcli.enhancecoding import load_enhancement

    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    common = ("--base", str(tiny_weights), "--data", str(image_dir), "--crops", "12", "--crop-size", "32",
              "--max-steps", "2", "--count-crops", "8", "--ckpt", str(tmp_path / "ckpt"))
    r = _run("tools/train_enhance.py", *common, "--out", str(first))
    assert r.returncode == 0, r.stderr
    r = _run("tools/train_enhance.py", *common, "--init", str(first), "--out", str(second), "--same-channel")
    assert r.returncode == 0, r.stderr
    a, b = load_enhancement(first), load_enhancement(second)
    assert a.base_id == b.base_id == load_weights(tiny_weights).model_id and a.model_id != b.model_id
    assert not a.config.same_channel and b.config.same_channel and b.counts.shape[2] == b.config.contexts
    assert b.training["steps"] == 2 and int(b.counts.sum()) > 0
    third = tmp_path / "c.safetensors"
    r = _run("tools/train_enhance.py", *common, "--init", str(second), "--out", str(third), "--four-passes",
             "--predictor")
    assert r.returncode == 0, r.stderr
    c = load_enhancement(third)
    assert c.config.same_channel and c.config.four_passes and c.config.predictor
    assert c.rule.passes == 4 and c.net.predictor.abs().sum() > 0  # fitted, not left at zero
    # trained with the rate priced in its coder's contexts: the same kind of layer comes out
    fourth = tmp_path / "d.safetensors"
    r = _run("tools/train_enhance.py", *common, "--init", str(third), "--out", str(fourth), "--coder-contexts")
    assert r.returncode == 0, r.stderr
    d = load_enhancement(fourth)
    assert d.config == c.config and d.model_id != c.model_id and d.net.predictor.abs().sum() > 0
    # its checkpoint priced the rate in the third layer's contexts: only that layer may resume it
    ckpt, again = str(tmp_path / "ckpt"), tmp_path / "d2.safetensors"
    r = _run("tools/train_enhance.py", *common, "--init", str(fourth), "--coder-contexts", "--resume", ckpt,
             "--out", str(again))
    assert r.returncode != 0 and f"its rate contexts are layer {c.model_id}'s" in r.stderr and not again.exists()
    r = _run("tools/train_enhance.py", *common, "--init", str(third), "--coder-contexts", "--resume", ckpt,
             "--out", str(again))
    assert r.returncode == 0, r.stderr
    assert load_enhancement(again).training["steps"] == 2  # the checkpoint's steps: only recounted
    r = _run("tools/train_enhance.py", *common, "--out", str(tmp_path / "e.safetensors"), "--coder-contexts")
    assert r.returncode != 0 and "--coder-contexts needs an --init layer" in r.stderr


def _tiny_layer(image_dir, tiny_weights, tmp_path) -> tuple[tuple[str, ...], Path]:
    """(the tools' common dry-run flags, a small layer trained 2 steps over the tiny weights)."""
    layer = tmp_path / "a.safetensors"
    common = ("--base", str(tiny_weights), "--data", str(image_dir), "--crops", "12", "--crop-size", "32",
              "--max-steps", "2")
    r = _run("tools/train_enhance.py", *common, "--count-crops", "8", "--ckpt", str(tmp_path / "ckpt"),
             "--four-passes", "--predictor", "--out", str(layer))
    assert r.returncode == 0, r.stderr
    return common, layer


def test_tune_synthesis_dry_run_changes_the_synthesis_alone(image_dir, tiny_weights, tmp_path):
    from vqcli.enhancecoding import load_enhancement

    common, layer = _tiny_layer(image_dir, tiny_weights, tmp_path)
    tuned = tmp_path / "t.safetensors"
    r = _run("tools/tune_synthesis.py", *common, "--init", str(layer), "--lr", "1e-2", "--out", str(tuned))
    assert r.returncode == 0, r.stderr
    a, t = load_enhancement(layer), load_enhancement(tuned)
    assert t.model_id != a.model_id and t.base_id == a.base_id and t.config == a.config
    assert t.training["tuned_synthesis"]["from"] == a.model_id and t.training["tuned_synthesis"]["steps"] == 2
    # the encoder's side and the coder are untouched: the same symbols, coded with the same tables
    assert (t.counts == a.counts).all()
    theirs, mine = a.net.state_dict(), t.net.state_dict()
    for name, tensor in theirs.items():
        assert torch.equal(mine[name], tensor) != name.startswith("synthesis."), name


def test_tune_synthesis_light_dry_run_keeps_the_coder_and_swaps_the_synthesis(image_dir, tiny_weights, tmp_path):
    import dataclasses

    from vqcli.enhancecoding import load_enhancement

    common, layer = _tiny_layer(image_dir, tiny_weights, tmp_path)
    light = tmp_path / "l.safetensors"
    r = _run("tools/tune_synthesis.py", *common, "--init", str(layer), "--light", "--cosine", "--out", str(light))
    assert r.returncode == 0, r.stderr
    a, t = load_enhancement(layer), load_enhancement(light)
    assert t.config == dataclasses.replace(a.config, light_synthesis=True) and t.base_id == a.base_id
    assert (t.counts == a.counts).all() and t.training["tuned_synthesis"]["light"] is True
    theirs, mine = a.net.state_dict(), t.net.state_dict()
    assert mine["synthesis.5.weight"].shape != theirs["synthesis.5.weight"].shape
    for name, tensor in theirs.items():  # the encoder's side and the coder's predictor as they were
        if not name.startswith("synthesis."):
            assert torch.equal(mine[name], tensor), name


def test_a_light_synthesis_is_cut_from_the_strongest_channels(monkeypatch):
    import dataclasses
    import importlib.util

    from vqcli.enhance import EnhanceConfig, Enhancement

    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # it imports train_enhance, its neighbour
    spec = importlib.util.spec_from_file_location("tune_synthesis", ROOT / "tools" / "tune_synthesis.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    torch.manual_seed(0)
    wide = Enhancement(EnhanceConfig(channels=4, width=8, levels=3, radius=7))
    with torch.no_grad():
        wide.synthesis[8].weight[:, 13] *= 50  # full-resolution channel 13: the strongest
        wide.synthesis[5].weight[:, 6] *= 50  # 1/2-resolution channel 6
    light = tune.lightened(wide)
    assert light.cfg == dataclasses.replace(wide.cfg, light_synthesis=True)
    src, dst = wide.synthesis, light.synthesis
    full = [c for c in range(16) if any(torch.equal(dst[8].weight[:, i], src[8].weight[:, c]) for i in range(8))]
    half = [c for c in range(8) if any(torch.equal(dst[2].weight[4 * i], src[2].weight[4 * c]) for i in range(4))]
    assert len(full) == 8 and 13 in full and len(half) == 4 and 6 in half
    assert torch.equal(dst[0].weight, src[0].weight)  # the first layer whole
    x = torch.randn(1, 12, 5, 6)
    assert light.synthesis(x).shape == wide.synthesis(x).shape == (1, 3, 20, 24)
