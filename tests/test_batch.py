"""Parallel batches (--jobs) and torchrun sharding (vqcli.batch)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, torch_threads
from PIL import Image
from typer.testing import CliRunner

from vqcli import batch, codec
from vqcli.cli import app
from vqcli.weights import load_weights

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str):
    return runner.invoke(app, list(args))


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("batch_in")
    for i, (h, w) in enumerate([(40, 56), (64, 48), (33, 71), (80, 80), (24, 30)]):
        Image.fromarray(make_image(h, w, 20 + i)).save(d / f"p{i}.png")
    (d / "zbad.png").write_bytes(b"not an image")
    return d


def test_shard_is_a_deterministic_partition() -> None:
    for n, world in [(10, 3), (2, 4), (0, 2), (7, 1)]:
        parts = [batch.shard(n, r, world) for r in range(world)]
        assert sorted(i for p in parts for i in p) == list(range(n))
        assert parts == [batch.shard(n, r, world) for r in range(world)]


def test_default_jobs_is_the_available_cores(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert batch.default_jobs() == 4
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert batch.default_jobs() == 2


def test_jobs_outputs_identical_and_failures_isolated(tiny_weights, inputs, tmp_path) -> None:
    """--jobs 2 (worker processes) writes the same bytes as --jobs 1, reports in input order, and
    the unreadable file fails alone with its one-line error and exit 1."""
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"c{n}"
        out.mkdir()
        r = cli("compress", str(inputs), "-o", str(out), "--weights", str(tiny_weights), "--jobs", str(n), "--json")
        assert r.exit_code == 1, r.output
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and "zbad.png: not a readable image" in err[0], r.stderr
        rep = json.loads(r.stdout)
        assert [Path(i["input"]).name for i in rep] == sorted(p.name for p in inputs.iterdir())
        outs[n] = files(out)
    assert len(outs[1]) == 5 and outs[1] == outs[2]
    backs = {}
    for n in (1, 2):
        back = tmp_path / f"d{n}"
        back.mkdir()
        r = cli("decompress", str(tmp_path / "c1"), "-o", str(back), "--weights", str(tiny_weights), "-j", str(n))
        assert r.exit_code == 0, r.output
        backs[n] = files(back)
    assert len(backs[1]) == 5 and backs[1] == backs[2]
    assert cli("compress", str(inputs), "--jobs", "0").exit_code == 2


def test_decoded_pixels_do_not_depend_on_the_thread_count(tiny_weights) -> None:
    w = load_weights(tiny_weights)
    rgb = make_image(96, 128, 5)
    got = []
    for threads in (1, 2):
        with torch_threads(threads):
            idx = codec.encode_indices(w, rgb, tile=6)
            got.append((idx, codec.decode_indices(w, idx, 128, 96, tile=6)))
    assert np.array_equal(got[0][0], got[1][0]) and np.array_equal(got[0][1], got[1][1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_shard_the_batch(tiny_weights, inputs, tmp_path) -> None:
    """Two ranks with torchrun's environment (gloo on localhost): together they write exactly what
    one process writes, each only its shard, and only rank 0 prints the summary."""
    single = tmp_path / "single"
    single.mkdir()
    r = cli("compress", str(inputs), "-o", str(single), "--weights", str(tiny_weights), "-j", "1")
    assert r.exit_code == 1
    out = tmp_path / "ranks"
    out.mkdir()
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vqcli", "compress", str(inputs), "-o", str(out), "--weights", str(tiny_weights),
             "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    res = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [1, 0], res  # rank 0 reports the failure of the whole run
    assert files(out) == files(single)
    summary = json.loads(res[0][0])
    assert [Path(i["input"]).name for i in summary] == sorted(p.name for p in inputs.iterdir())
    assert res[1][0] == b""  # rank 1 prints nothing on stdout
    # the bad file (index 5) belongs to rank 1's shard: its one-line error comes from there
    assert b"zbad.png: not a readable image" in res[1][1] and b"zbad.png" not in res[0][1]
