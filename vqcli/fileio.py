"""File I/O with one-line errors: reading inputs, and atomic output (a temp file in the target's
directory, renamed into place when complete)."""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UsageError, VQError

STDIO = "-"
"""The output (or input) name that means stdout (stdin), as in gzip and cwebp."""


def os_error_message(e: OSError, fallback: object = None) -> str:
    """'FILE: what went wrong' for an OSError (the file it names, else `fallback`)."""
    name = e.filename if e.filename is not None else fallback
    what = e.strerror or str(e) or type(e).__name__
    return f"{name}: {what}" if name is not None else what


def read_file(path: Path | str) -> bytes:
    """A file's bytes; a missing, unreadable or directory path is a one-line VQError."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VQError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise VQError(f"{path}: is a directory") from None
    except OSError as e:
        raise VQError(f"{path}: cannot read ({e.strerror})") from None


def check_output(path: Path | str, force: bool = True) -> Path:
    """Fail before any work if `path` cannot be written: a missing parent directory, a directory
    in the way, or (without force) an existing file. Returns the path."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        above = next((p for p in parent.parents if p.exists()), None) if not parent.exists() else parent
        if above is not None and not above.is_dir():
            raise VQError(f"{path}: {above} is not a directory")
        raise VQError(f"{path}: output directory {parent} does not exist")
    if path.is_dir():
        raise VQError(f"{path}: is a directory")
    if not force and path.exists():
        raise VQError(f"{path}: already exists (use -f to overwrite)")
    return path


_PENDING: set[str] = set()
"""Temp files not yet renamed into place or removed. A name is listed before its file exists, so
that whatever interrupts (SIGTERM or Ctrl-C at any bytecode, even inside the creation), the exit
handler removes it: only kill -9 can leave one behind."""


@atexit.register
def _remove_pending() -> None:
    for tmp in list(_PENDING):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _PENDING.discard(tmp)


def _create_temp(path: Path, parent: Path) -> tuple[int, str]:
    """A new hidden temp file `.NAME.XXXXXXXX.tmp` beside `path` (mode 0666 less the umask)."""
    while True:
        tmp = str(parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        _PENDING.add(tmp)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            _PENDING.discard(tmp)
        except OSError as e:
            _PENDING.discard(tmp)
            raise VQError(f"{path}: cannot write ({e.strerror})") from None


@contextlib.contextmanager
def atomic_output(path: Path | str, force: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file beside `path`; on success rename it over `path`, on error remove it.

    With force=False an existing `path` is an error (checked before and, via a hard link
    where the filesystem allows, at the moment of publishing).
    """
    path = check_output(path, force)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = _create_temp(path, parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobber
            except FileExistsError:
                raise VQError(f"{path}: already exists (use -f to overwrite)") from None
            except OSError:
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except OSError as e:  # a full disk, a quota: the message names the output, not just the errno
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise VQError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _PENDING.discard(tmp)


def write_atomic(path: Path | str, data: bytes, force: bool = True) -> None:
    with atomic_output(path, force) as f:
        f.write(data)


def one_stdout(**outputs: bool) -> bool:
    """Whether any output goes to stdout ('-'); a UsageError when two would (outputs: each one's
    option, as `json=True`, `plot=True`, true where that output is stdout)."""
    on = [f"--{k}" for k, v in outputs.items() if v]
    if len(on) > 1:
        raise UsageError(f"{' and '.join(on)} would both write to stdout")
    return bool(on)


def check_target(dst: Path | str, force: bool, binary: bool = True) -> None:
    """Fail before any work if an output (a path, or '-' for stdout) cannot be written; binary
    data is never written to a terminal."""
    if str(dst) != STDIO:
        check_output(dst, force)
    elif binary and sys.stdout.isatty():
        raise UsageError("refusing to write binary data to a terminal (redirect stdout or use -o)")


def write_target(dst: Path | str, data: bytes, force: bool) -> None:
    """Write an output: to stdout for '-', else atomically to the file."""
    if str(dst) == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(dst, data, force=force)
