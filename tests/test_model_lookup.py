"""Weights found by the model id in a .vqz header: every released model keeps decoding its files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from conftest import make_image
from PIL import Image
from typer.testing import CliRunner

from vqcli.api import load_model
from vqcli.cli import app
from vqcli.weights import WEIGHTS_PATH_ENV, default_weights_path, find_weights, load_weights, model_id_in_metadata
from vqcli.weightspath import resolve_weights, shipped_dir, shipped_names


def _cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def test_shipped_default_is_found_by_its_id():
    w = load_weights(default_weights_path())
    assert model_id_in_metadata(default_weights_path()) == w.model_id
    assert find_weights(w.model_id) == default_weights_path()


def test_decompress_finds_weights_by_header_id(tiny_weights, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_weights, models / "mine.safetensors")
    src = tmp_path / "a.bmp"
    Image.fromarray(make_image(40, 56, 3)).save(src)
    r = _cli("compress", str(src), "--weights", str(tiny_weights), "--device", "cpu")
    assert r.exit_code == 0, r.output
    vqz = tmp_path / "a.vqz"

    # Not on the search path: one line naming the file and the model id, no output.
    monkeypatch.delenv(WEIGHTS_PATH_ENV, raising=False)
    r = _cli("decompress", str(vqz), "--device", "cpu")
    mid = load_weights(tiny_weights).model_id
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert str(vqz) in r.stderr and mid in r.stderr and WEIGHTS_PATH_ENV in r.stderr
    assert not (tmp_path / "a.png").exists()

    # On the search path (no --weights): decodes with the model the header names.
    r = _cli("decompress", str(vqz), "-o", str(tmp_path / "out.png"), "--device", "cpu",
             env={WEIGHTS_PATH_ENV: str(models)})
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out.png").size == (56, 40)


def test_every_shipped_model_is_found_by_its_id():
    """A former default stays in weights/ as <model id>.safetensors, so that its files decode; a
    model shipped beside the default under a name (ms-ssim) is documented in weights/README.md."""
    shipped = sorted(default_weights_path().parent.glob("*.safetensors"))
    former = [p for p in shipped if re.fullmatch(r"[0-9a-f]{16}", p.stem)]
    assert "5e93618b9ecfe707" in [p.stem for p in former], "the first release must stay shipped"
    documented = (default_weights_path().parent / "README.md").read_text()
    for path in shipped:
        mid = model_id_in_metadata(path)
        assert path in former and path.stem == mid or f"`{path.name}` | `{mid}`" in documented, path
        assert find_weights(mid) == path
        assert load_weights(path).model_id == mid


def test_weights_option_takes_a_shipped_models_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mid = model_id_in_metadata(default_weights_path())
    former = next(n for n in shipped_names() if n != "default")
    assert resolve_weights(None) == resolve_weights("default") == default_weights_path()
    assert resolve_weights(former) == shipped_dir() / f"{former}.safetensors"
    assert load_model(former).model_id == former  # former releases are filed under their id
    r = _cli("stats", "codebook", "--weights", "default", "--json")
    assert r.exit_code == 0 and mid in r.stdout, r.output
    # A file of that name here wins; a name that is neither gives one line listing the names.
    (tmp_path / "default").write_bytes(b"not weights")
    assert resolve_weights("default") == Path("default")
    r = _cli("stats", "codebook", "--weights", "no-such-model")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert "no-such-model: no such file (nor a shipped model: " in r.stderr and former in r.stderr
