"""Codebook statistics (exact on hand-made histograms), BD-rate, plots and `vq stats`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vqcli.cli import app
from vqcli.metrics import bd_rate, pchip_integral, psnr
from vqcli.usage import codebook_usage, file_histogram, sparkline, stage_usage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def hand_histogram() -> np.ndarray:
    h = np.zeros((3, 200), dtype=np.int64)
    h[0, :100] = 7  # half the codes, uniform
    h[1, [0, 1, 5]] = [50, 30, 20]  # three codes
    h[2] = np.arange(1, 201)  # all used, skewed
    return h


def test_stats_exact_on_hand_histogram() -> None:
    s1, s2, s3 = codebook_usage(hand_histogram(), [0.5, 0.25, 0.125])
    assert (s1.used, s1.total, s1.dead, s1.top1_codes) == (100, 700, list(range(100, 200)), 2)
    assert s1.entropy_bits == pytest.approx(math.log2(100), abs=1e-12)
    assert s1.perplexity == pytest.approx(100, abs=1e-9)
    assert s1.top1_share == 14 / 700 and s1.code_distance == 0.5
    assert s2.used == 3 and len(s2.dead) == 197 and s2.dead[:5] == [2, 3, 4, 6, 7]
    h2 = -(0.5 * math.log2(0.5) + 0.3 * math.log2(0.3) + 0.2 * math.log2(0.2))
    assert s2.entropy_bits == pytest.approx(h2, abs=1e-12) and s2.perplexity == pytest.approx(2**h2)
    assert s2.top1_share == 0.8  # top 2 codes of 200: 50 + 30 of 100
    assert s3.used == 200 and s3.dead == [] and s3.top1_share == (200 + 199) / (200 * 201 / 2)
    assert s3.max_entropy_bits == pytest.approx(math.log2(200))


def test_stage_usage_edge_cases() -> None:
    one = stage_usage(np.array([0, 9, 0, 0]))
    assert (one.used, one.entropy_bits, one.perplexity, one.top1_codes, one.top1_share) == (1, 0.0, 1.0, 1, 1.0)
    empty = stage_usage(np.zeros(4, dtype=np.int64))
    assert empty.used == 0 and empty.perplexity == 0 and len(empty.dead) == 4
    assert stage_usage(np.ones(256, dtype=np.int64)).top1_codes == 3  # ceil(2.56)


def test_file_histogram_and_sparkline() -> None:
    idx = np.array([[[0, 1], [1, 1]], [[3, 3], [3, 2]]])
    assert file_histogram(idx, 4).tolist() == [[1, 3, 0, 0], [0, 0, 1, 3]]
    line = sparkline(hand_histogram()[1], width=32)
    assert len(line) == 32 and line[0] == "█" and line[-1] == " "


def test_bd_rate_self_and_half_rate() -> None:
    rate, q = [0.1, 0.2, 0.4, 0.8, 1.6], [28.0, 30.5, 33.0, 35.0, 37.0]
    assert bd_rate(rate, q, rate, q) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rate, q, [r / 2 for r in rate], q) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(rate, q, [r * 2 for r in rate], q) == pytest.approx(100.0, abs=1e-6)
    assert bd_rate([1, 2], [30, 31], [1, 2], [32, 33]) is None  # no overlap
    assert bd_rate([1], [30], [1, 2], [30, 31]) is None  # one point is no curve


def test_pchip_integral_is_exact_for_linear_data() -> None:
    x, y = [0.0, 1.0, 3.0, 4.0], [1.0, 3.0, 7.0, 9.0]  # y = 2x + 1
    assert pchip_integral(x, y, 0.5, 3.5) == pytest.approx(3.5**2 + 3.5 - 0.25 - 0.5, abs=1e-12)


def test_psnr() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (256 / 48)))
    assert psnr(a, a) == 100.0


def test_codebook_plot_is_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from vqcli.plots import codebook_figure

    hist = hand_histogram()
    codes = [np.random.default_rng(s).normal(size=(200, 8)) for s in range(3)]
    out = tmp_path / "cb.png"
    codebook_figure(out, hist, "test", codes)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and 5_000 < len(data) < 400_000


def test_stats_codebook_json_matches_histogram(tiny_weights: Path) -> None:
    from vqcli.weights import load_weights

    w = load_weights(tiny_weights)
    res = runner.invoke(app, ["stats", "codebook", "--weights", str(tiny_weights), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    hist = w.stats["histogram"].numpy()
    assert rep["histogram"] == hist.tolist() and rep["model_id"] == w.model_id
    for row, counts in zip(rep["per_stage"], hist):
        assert row["used"] == int((counts > 0).sum()) and row["dead"] == np.flatnonzero(counts == 0).tolist()
        assert row["total"] == int(counts.sum())
    assert rep["per_stage"][0]["code_distance"] is not None


def test_stats_codebook_images_table_and_plot(tiny_weights: Path, image_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "cb.png"
    res = runner.invoke(app, ["stats", "codebook", "--weights", str(tiny_weights), "--images", str(image_dir),
                              "--limit", "3", "--plot", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "perplexity" in res.stdout and "3 images" in res.stdout
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_without_matplotlib_is_one_line(tiny_weights: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    res = runner.invoke(app, ["stats", "codebook", "--weights", str(tiny_weights), "--plot", str(tmp_path / "x.png")])
    assert res.exit_code == 1
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "pip install 'vqcli[plot]'" in err and "x.png" in err
    assert not (tmp_path / "x.png").exists()


def test_stats_missing_weights_is_one_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["stats", "codebook", "--weights", str(tmp_path / "nope.safetensors")])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1 and "nope.safetensors" in res.stderr


def test_stats_file(tiny_weights: Path, tmp_path: Path) -> None:
    from conftest import make_image

    from vqcli import codec
    from vqcli.weights import load_weights

    w = load_weights(tiny_weights)
    rgb = make_image(40, 56, 3)
    idx = codec.encode_indices(w, rgb)
    f = tmp_path / "a.vqz"
    f.write_bytes(codec.pack(w, idx[:2], 56, 40))
    res = runner.invoke(app, ["stats", "file", str(f), "--weights", str(tiny_weights), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["stored_stages"] == 2 and rep["histogram"] == file_histogram(idx[:2], 16).tolist()
    assert [r["total"] for r in rep["per_stage"]] == [5 * 7, 5 * 7]
    res = runner.invoke(app, ["stats", "file", str(tmp_path / "none.vqz"), "--weights", str(tiny_weights)])
    assert res.exit_code == 1 and "none.vqz" in res.stderr


def test_entropy_bits_and_psnr_from_mse() -> None:
    from vqcli.metrics import PSNR_CAP, entropy_bits, psnr, psnr_from_mse

    assert entropy_bits(np.array([3, 3, 0, 3, 3])) == 2.0
    assert entropy_bits(np.array([0, 7])) == 0.0 and entropy_bits(np.zeros(4, np.int64)) == 0.0
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 48  # mse = 48^2 / 48 = 48
    assert psnr(a, b) == pytest.approx(psnr_from_mse(48.0)) == pytest.approx(10 * np.log10(255**2 / 48))
    assert psnr_from_mse(0.0) == PSNR_CAP and psnr_from_mse(0.01, peak=1.0) == pytest.approx(20.0)
