"""`vq compare`: equal-size files of vq and the classical codecs, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image, features
from typer.testing import CliRunner

from vqcli.classical import CLASSICAL
from vqcli.classical import encode as classical_encode
from vqcli.cli import app
from vqcli.compare import fit_quality, parse_crop, target_bytes
from vqcli.errors import UsageError

runner = CliRunner()


def test_fit_quality_is_the_highest_quality_that_fits() -> None:
    im = Image.fromarray(make_image(96, 128, 21))
    budget = len(classical_encode("jpeg", im, 50))
    q, data, note = fit_quality("jpeg", im, budget + 20)
    assert note is None and len(data) <= budget + 20 and q >= 50
    assert q == 100 or len(classical_encode("jpeg", im, q + 1)) > budget + 20
    q, data, note = fit_quality("webp", im, 10)  # nothing fits 10 bytes: the smallest file, with a note
    assert q == CLASSICAL["webp"].quality_range[0] and len(data) > 10 and "over the budget" in note


def test_targets_and_crops() -> None:
    assert target_bytes(100, 80, None, None) == 250  # 0.25 bpp by default
    assert target_bytes(100, 80, 1.0, None) == 1000 and target_bytes(100, 80, None, 77) == 77
    with pytest.raises(UsageError, match="bpp and size"):
        target_bytes(100, 80, 1.0, 5)
    assert parse_crop(None, 400, 300) == (120, 70, 160, 160)
    assert parse_crop(None, 100, 60) == (0, 0, 100, 60)
    assert parse_crop("10,20,30,40", 100, 60) == (10, 20, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "90,0,20,20", "0,0,0,5"):
        with pytest.raises(UsageError, match="crop"):
            parse_crop(bad, 100, 60)


def test_compare_cli(tiny_weights: Path, tmp_path: Path) -> None:
    rgb = make_image(96, 128, 22)
    src = tmp_path / "a.png"
    Image.fromarray(rgb).save(src)
    budget = 1500
    args = ["compare", str(src), "--size", str(budget), "--crop", "8,16,40,30", "--zoom", "3",
            "--weights", str(tiny_weights), "--device", "cpu"]
    r = runner.invoke(app, [*args, "--json", "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    names = [e["codec"] for e in rep["codecs"]]
    assert names == ["original", "vq", "jpeg", "webp"] + (["avif"] if features.check("avif") else [])
    assert rep["budget_bytes"] == budget and rep["crop"] == [8, 16, 40, 30]
    for e in rep["codecs"][1:]:
        assert e["bytes"] <= budget or e["note"], e
        assert e["bpp"] == pytest.approx(8 * e["bytes"] / (96 * 128))
        assert 10 < e["psnr"] < 60 and e["ssim"] is not None  # 96 px: too small for MS-SSIM
    # the figure: panels of the 3x nearest-neighbour zoomed crop, the original first and exact
    fig = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    want = np.repeat(np.repeat(rgb[16:46, 8:48], 3, axis=0), 3, axis=1)
    assert (fig[8:8 + 90, 8:8 + 120] == want).all()
    assert fig.shape[1] == 8 + len(names) * (120 + 8)
    # the table; an existing figure is kept without -f; bad usage names the flags
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "h.png")])
    assert r.exit_code == 0 and "JPEG 4:2:0" in r.stdout and "quality" in r.stdout and (tmp_path / "h.png").exists()
    r = runner.invoke(app, [*args, "--bpp", "0.5", "-o", str(tmp_path / "i.png")])
    assert r.exit_code == 2 and "--bpp and --size" in r.output and not (tmp_path / "i.png").exists()
    r = runner.invoke(app, ["compare", str(src), "--crop", "0,0,500,5", "--weights", str(tiny_weights),
                            "-o", str(tmp_path / "j.png")])
    assert r.exit_code == 2 and "--crop 0,0,500,5: not inside the 128x96 image" in r.output
