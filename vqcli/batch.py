"""Running a batch of independent jobs: in this process, in N worker processes (--jobs), and
sharded over the ranks of a torchrun launch.

Workers are processes (spawned: no fork of a process whose OpenMP pool is running), each with
cores / N torch threads and its own copy of the weights, loaded once per worker by the
picklable `make_one` factory. Each output depends only on its input, so any --jobs gives the
same bytes (the model's results do not depend on the thread count; tests/test_batch.py).

Under torchrun (WORLD_SIZE > 1 in the environment) rank r takes jobs r, r + world, r + 2 world,
..., writes only those outputs, and rank 0 prints the summary after a gloo gather of every
rank's reports.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import VQError, cli_message, is_out_of_memory, one_line
from .fileio import STDIO, os_error_message

Report = dict[str, Any]
One = Callable[[Any], Report]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_world: int  # ranks on this node, which share its cores


def torchrun_ranks() -> Ranks | None:
    """This process's place in a torchrun launch (None when not launched by one with > 1 rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def default_jobs() -> int:
    """--jobs default: the available cores, shared among the ranks of this node under torchrun."""
    ranks = torchrun_ranks()
    return max(1, available_cores() // (ranks.local_world if ranks else 1))


def shard(n: int, rank: int, world: int) -> list[int]:
    """The job numbers rank `rank` of `world` takes: a deterministic round-robin."""
    return list(range(rank, n, world))


@dataclass
class Job:
    src: str  # a path or "-"
    dst: str  # a path or "-"
    mkdir: bool = False  # the output goes below -o DIR: its folder is made (as mkdir -p would) first


def input_name(src: str) -> str:
    """How messages name an input ('-' is stdin)."""
    return "<stdin>" if src == STDIO else src


def console(stderr: bool = True):
    """The rich console of reports (stderr: notes, errors, progress), one line per message."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)  # a note stays one line, whatever the width


@contextlib.contextmanager
def oom_named(job: Job) -> Iterator[None]:
    """Running out of memory (host, or a device: torch.OutOfMemoryError, "out of memory"
    RuntimeErrors) in a job, as a VQError naming its file."""
    try:
        yield
    except Exception as e:
        if is_out_of_memory(e):
            raise VQError(f"{input_name(job.src)}: out of memory (try a smaller image, --max-pixels or --device cpu)") from None
        raise


def _attempt(one: One, job) -> tuple[Report, str | None]:
    """(report, None), or (error report, one-line message) when the job fails with a data error."""
    try:
        with oom_named(job):
            return one(job), None
    except (VQError, OSError) as e:
        e = e if isinstance(e, VQError) else VQError(os_error_message(e, job.src))
        msg = cli_message(e)
        return {"input": job.src, "output": job.dst, "error": msg}, msg


_WORKER_ONE: One | None = None


def _worker_init(make_one: Callable[[], One], threads: int) -> None:
    import torch

    global _WORKER_ONE
    torch.set_num_threads(threads)
    _WORKER_ONE = make_one()


def _worker_run(job) -> tuple[Report, str | None]:
    assert _WORKER_ONE is not None
    return _attempt(_WORKER_ONE, job)


def run_batch(jobs: list, make_one: Callable[[], One], n_jobs: int | None = None, progress: bool = True
              ) -> tuple[list[Report], int]:
    """Run every job (a batch: each failure is reported on one line and the others go on) ->
    (reports in job order, failures). Under torchrun only this rank's shard runs here, and every
    rank gets all ranks' reports back."""
    ranks = torchrun_ranks()
    mine = shard(len(jobs), ranks.rank, ranks.world) if ranks else list(range(len(jobs)))
    n_jobs = default_jobs() if n_jobs is None else n_jobs
    err = console()
    done: dict[int, Report] = {}
    failed = 0

    def report(i: int, result: tuple[Report, str | None]) -> None:
        nonlocal failed
        done[i], msg = result
        if msg is not None:
            failed += 1
            err.print(f"vq: error: {one_line(msg)}", markup=False, highlight=False, soft_wrap=True)

    from rich.progress import Progress

    with Progress(console=err, transient=True, disable=not (progress and err.is_terminal)) as prog:
        task = prog.add_task("working", total=len(mine))
        workers = min(n_jobs, len(mine))
        if workers <= 1:
            one = make_one()
            for i in mine:
                report(i, _attempt(one, jobs[i]))
                prog.advance(task)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, available_cores() // workers)
            with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _worker_init,
                                     (make_one, threads)) as pool:
                futures = {pool.submit(_worker_run, jobs[i]): i for i in mine}
                try:
                    for fut in as_completed(futures):
                        report(futures[fut], fut.result())
                        prog.advance(task)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    if ranks is not None:
        done, failed = _gather(done, failed)
    return [done[i] for i in sorted(done)], failed


def _gather(done: dict[int, Report], failed: int) -> tuple[dict[int, Report], int]:
    """Every rank's reports and failure count, on every rank (gloo)."""
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo")
    try:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (done, failed))
    finally:
        if own:
            dist.destroy_process_group()
    merged: dict[int, Report] = {}
    for d, _ in parts:
        merged.update(d)
    return merged, sum(f for _, f in parts)


def is_summary_rank() -> bool:
    """Whether this process prints the summary (rank 0, or the only process)."""
    ranks = torchrun_ranks()
    return ranks is None or ranks.rank == 0
