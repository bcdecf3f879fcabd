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


def test_truncated_training_image_is_skipped_and_resume_keeps_the_total(image_dir: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_dir, data)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(data / "img0.png").save(buf, "JPEG")
    # The header is fine, the pixels are not: Image.verify() passes such a JPEG, decoding fails.
    (data / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out = tmp_path / "w.safetensors"
    args = ["--preset", "tiny", "--out", str(out), "--batch-size", "4", "--crop", "32", "--workers", "0",
            "--device", "cpu"]
    r = runner.invoke(app, ["train", str(data), "--steps", "6", *args])
    assert r.exit_code == 0, r.output
    assert load_weights(out).training["images"] == 8  # cut.jpg skipped
    # Resuming a finished run without --steps keeps its 6 steps (it does not run on to the default);
    # it writes the weights again, so -f: they would replace the ones files were made with.
    resume = ["train", str(data), "--resume", str(tmp_path / "w.ckpt.safetensors"), *args]
    r = runner.invoke(app, resume)
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(app, [*resume, "-f"])
    assert r.exit_code == 0, r.output
    assert load_weights(out).training["steps"] == 6
    r = runner.invoke(app, ["train", str(data), "--steps", "6", *args[:2], "--out", str(tmp_path / "no" / "w.st")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_unexpected_errors_are_one_line(monkeypatch) -> None:
    import pytest
    import typer

    from vqcli.cli import run_guarded

    def boom() -> None:
        raise RuntimeError("something broke\nsecond line")

    with pytest.raises(typer.Exit) as e:
        run_guarded(boom)
    assert e.value.exit_code == 1
    with pytest.raises(typer.Exit) as e:
        run_guarded(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device", "out.vqz")))
    assert e.value.exit_code == 1
    monkeypatch.setenv("VQ_DEBUG", "1")
    with pytest.raises(RuntimeError):
        run_guarded(boom)


def _train_args(image_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(image_dir), "--preset", "tiny", "--steps", "2", "--out", str(out), "--batch-size", "2",
            "--crop", "32", "--workers", "0", "--device", "cpu", *extra]


def test_vq_train_never_replaces_weights_or_a_checkpoint_without_force(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"weights that decode my files")
    r = runner.invoke(app, _train_args(image_dir, out))
    assert r.exit_code == 1 and "already exists (use -f to overwrite)" in r.output and str(out) in r.output
    assert out.read_bytes() == b"weights that decode my files"
    out.unlink()
    ckpt = tmp_path / "mine.ckpt.safetensors"
    ckpt.write_bytes(b"an interrupted run")
    r = runner.invoke(app, _train_args(image_dir, out))
    assert r.exit_code == 1 and f"--resume {ckpt}" in r.output and "-f" in r.output
    assert ckpt.read_bytes() == b"an interrupted run" and not out.exists()
    r = runner.invoke(app, _train_args(image_dir, out, "-f"))
    assert r.exit_code == 0, r.output
    assert load_weights(out).config.stages == 3 and ckpt.stat().st_size > 100
