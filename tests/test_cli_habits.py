"""What real users feed vq and expect of it, run as they would run it (the CLI, exit codes, stderr)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image
from PIL import Image
from typer.testing import CliRunner

from vqcli.cli import app

runner = CliRunner()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "photo.png"
    Image.fromarray(make_image(48, 64, 2)).save(p)
    return p


@pytest.mark.parametrize("target", [["--psnr", "200"], ["--bpp", "0.0001"]])
def test_an_unreachable_rate_target_fails_unless_best_effort(photo, tiny_weights, target):
    out = photo.with_suffix(".vqz")
    r = runner.invoke(app, ["compress", str(photo), "--weights", str(tiny_weights), *target])
    assert r.exit_code == 1 and not out.exists()
    assert r.stderr.count("\n") == 1 and str(photo) in r.stderr and "--best-effort" in r.stderr
    r = runner.invoke(app, ["compress", str(photo), "--weights", str(tiny_weights), *target, "--best-effort"])
    assert r.exit_code == 0 and out.exists()
    assert "vq: note:" in r.stderr and "used quality" in r.stderr
