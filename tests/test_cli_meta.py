"""`vq --version` and shell completion (run in a scratch HOME: no real shell file is touched)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from vqcli import __version__
from vqcli.weightspath import default_weights_path, model_id_in_metadata, read_metadata

ROOT = Path(__file__).resolve().parent.parent
NO_TORCH = "\nimport sys\nassert 'torch' not in sys.modules, 'torch imported'\n"


def vq(*args: str, env: dict[str, str] | None = None, home: Path | None = None) -> subprocess.CompletedProcess:
    """`vq ARGS` in a subprocess (as the console script runs it), failing if it imported torch.

    It runs as a child of bash, as from a terminal: --show-completion and --install-completion
    take the shell from the parent process (shellingham), whoever started the tests."""
    code = ("import sys\nfrom vqcli.cli import main\nsys.argv = ['vq', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            + NO_TORCH + "sys.exit(code)\n")
    full = {**os.environ, **(env or {}), **({"HOME": str(home)} if home else {})}
    # '; exit $?' keeps bash from exec'ing python in its place, so bash stays the parent.
    return subprocess.run(["bash", "-c", '"$@"; exit $?', "bash", sys.executable, "-c", code, *args],
                          capture_output=True, text=True, timeout=60, env=full, cwd=ROOT)


def test_version_prints_the_version_and_the_default_model_id() -> None:
    r = vq("--version")
    assert r.returncode == 0, r.stderr
    mid = model_id_in_metadata(default_weights_path())
    assert re.fullmatch(r"[0-9a-f]{16}", mid)
    assert r.stdout.splitlines()[0] == f"vq {__version__}"
    assert f"default model {mid}" in r.stdout
    assert vq("-V").stdout == r.stdout


def test_read_metadata_reads_only_the_header(tmp_path: Path) -> None:
    assert read_metadata(default_weights_path())["model_id"] == model_id_in_metadata(default_weights_path())
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 20)
    (tmp_path / "text.safetensors").write_bytes(b"hello world, not json")
    assert read_metadata(tmp_path / "junk.safetensors") is None
    assert read_metadata(tmp_path / "text.safetensors") is None
    assert read_metadata(tmp_path / "missing.safetensors") is None


def test_completion_script_and_completions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    r = vq("--show-completion", home=home)
    assert r.returncode == 0, r.stderr
    assert "_vq_completion" in r.stdout and "complete " in r.stdout and "_VQ_COMPLETE" in r.stdout
    assert not list(home.iterdir())  # showing writes nothing
    # what the script does at a TAB: the program answers through the environment
    r = vq(env={"_VQ_COMPLETE": "complete_bash", "COMP_WORDS": "vq comp", "COMP_CWORD": "1"}, home=home)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"compress", "compare"}
    r = vq(env={"_VQ_COMPLETE": "complete_bash", "COMP_WORDS": "vq compress --st", "COMP_CWORD": "2"}, home=home)
    assert r.stdout.split() == ["--stages"]


def test_install_completion_writes_only_below_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    r = vq("--install-completion", home=home)
    assert r.returncode == 0, r.stderr
    rc = (home / ".bashrc").read_text()
    script = home / ".bash_completions" / "vq.sh"
    assert str(script.relative_to(home)) in rc and "_vq_completion" in script.read_text()
