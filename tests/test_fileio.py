"""Atomic outputs: a temp file beside the target, renamed into place, never left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vqcli import fileio


def _hidden(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_write_atomic_publishes_whole_file_with_the_usual_mode(tmp_path: Path) -> None:
    out = tmp_path / "a.vqz"
    fileio.write_atomic(out, b"data")
    assert out.read_bytes() == b"data" and _hidden(tmp_path) == []
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(fileio.VQError, match="already exists"):
        fileio.write_atomic(out, b"other", force=False)
    assert out.read_bytes() == b"data" and not fileio._PENDING


def test_an_error_while_writing_removes_the_temp_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), fileio.atomic_output(tmp_path / "a.vqz") as f:
        f.write(b"half")
        raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == [] and not fileio._PENDING


def test_an_interrupt_inside_the_creation_is_cleaned_at_exit(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM/Ctrl-C can land after the file exists but before atomic_output knows its name:
    the name was listed first, so the exit handler removes it."""
    real_open = os.open

    def open_then_interrupt(path, flags, mode=0o777):
        os.close(real_open(path, flags, mode))
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fileio.write_atomic(tmp_path / "a.vqz", b"data")
    monkeypatch.undo()
    assert len(_hidden(tmp_path)) == 1  # what an interrupted process would leave without the handler
    fileio._remove_pending()
    assert list(tmp_path.iterdir()) == [] and not fileio._PENDING
