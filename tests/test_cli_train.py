"""`vq train` and the CLI's start-up through Typer's test runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from vqcli.cli import app
from vqcli.weights import load_weights

runner = CliRunner()


def test_vq_train_writes_weights_that_load(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["train", str(image_dir), "--preset", "tiny", "--steps", "12", "--out", str(out),
                            "--batch-size", "4", "--crop", "32", "--workers", "0", "--device", "cpu",
                            "--val", str(image_dir), "--val-every", "6"])
    assert r.exit_code == 0, r.output
    w = load_weights(out)
    assert w.config.stages == 3 and w.training["steps"] == 12
    assert w.training["val"]["psnr"] and len(w.training["val"]["usage"]) == 3
    assert (tmp_path / "w.ckpt.safetensors").exists()


def test_vq_train_bad_input_is_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", str(tmp_path / "nope"), "--preset", "tiny"])
    assert r.exit_code == 1 and "nope" in r.output and "Traceback" not in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["train", str(empty), "--preset", "tiny", "--out", str(tmp_path / "w.safetensors")])
    assert r.exit_code == 1 and "no readable images" in r.output
    assert not (tmp_path / "w.safetensors").exists()
    r = runner.invoke(app, ["train", str(empty), "--preset", "huge"])
    assert r.exit_code == 2 and "unknown preset" in r.output


def test_help_does_not_import_torch() -> None:
    code = "import sys; from vqcli.cli import app; sys.argv=['vq','--help']\ntry: app()\nexcept SystemExit: pass\n" \
           "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "NOTORCH" in out and "compress" in out and "train" in out


def test_python_m_vqcli_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "vqcli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage" in r.stdout
