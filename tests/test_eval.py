"""`vq eval` end to end on two tiny generated images, and the RD plot."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_image
from PIL import Image, features
from typer.testing import CliRunner

from vqcli.cli import app
from vqcli.evaluate import VQ_QUALITIES
from vqcli.rate import DEFAULT_EFFORT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_eval_end_to_end(tiny_weights: Path, tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    for i, (h, w) in enumerate([(40, 64), (48, 56)]):
        Image.fromarray(make_image(h, w, 10 + i)).save(d / f"t{i}.png")
    out, plot = tmp_path / "eval.json", tmp_path / "rd.png"
    args = ["eval", str(d), "--weights", str(tiny_weights), "--json", str(out), "--device", "cpu"]
    has_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_mpl = False
    res = CliRunner().invoke(app, args + (["--plot", str(plot)] if has_mpl else []))
    assert res.exit_code == 0, res.output
    assert "BD-rate" in res.stdout
    rep = json.loads(out.read_text())
    expected = {"vq", "vq-stages", "jpeg", "webp"} | ({"avif"} if features.check("avif") else set())
    assert set(rep["codecs"]) == expected and set(rep["bd_rate"]) == expected - {"vq"}
    assert rep["images"] == 2 and len(rep["per_image"]) == 2
    assert rep["effort"] == DEFAULT_EFFORT
    vq, uniform = rep["codecs"]["vq"]["curve"], rep["codecs"]["vq-stages"]["curve"]
    assert [r["quality"] for r in vq] == list(VQ_QUALITIES) and [r["stages"] for r in uniform] == [1, 2, 3]
    for curve in (vq, uniform):
        assert all(r["bpp"] > 0 and r["encode_ms"] > 0 and r["decode_ms"] > 0 for r in curve)
        assert curve[0]["bpp"] < curve[-1]["bpp"]
    for c in expected - {"vq", "vq-stages"}:
        curve = rep["codecs"][c]["curve"]
        assert len(curve) >= 8 and all(0 < r["ms_ssim"] <= 1 and r["psnr"] > 10 for r in curve)
    assert any("single-scale SSIM" in n for n in rep["notes"])  # tiny images cannot do 5 scales
    if has_mpl:
        assert plot.read_bytes()[:8] == PNG_MAGIC
    res = CliRunner().invoke(app, ["eval", str(d), "--weights", str(tiny_weights), "--codecs", "", "--effort", "0",
                                   "--json", str(tmp_path / "greedy.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "greedy.json").read_text())["effort"] == 0


def test_eval_bad_codec_and_folder(tiny_weights: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["eval", str(tmp_path), "--weights", str(tiny_weights), "--codecs", "jpeg,gif"])
    assert res.exit_code == 2 and "gif" in res.stderr  # bad usage
    res = CliRunner().invoke(app, ["eval", str(tmp_path), "--weights", str(tiny_weights), "--json",
                                   str(tmp_path / "missing" / "e.json")])
    assert res.exit_code == 1 and "does not exist" in res.stderr
    res = CliRunner().invoke(app, ["eval", str(tmp_path), "--weights", str(tiny_weights)])
    assert res.exit_code == 1 and str(tmp_path) in res.stderr and "no images" in res.stderr
