"""Thread and process policy for experiments made of many small, independent trainings (Fig. 1's runs, Fig. 3's
MLPs, the Fig. 3 sweep).

Such trainings are latency-bound: one intra-op thread each, several runs side by side, beats two-core ops run one
after the other (BENCHMARKS.md), and is far more robust when other processes share the cores. Side by side means
forked worker processes where that is safe (``run_side_by_side``): Python threads interleave on the GIL between
every small kernel, so two of them run barely faster than one (Fig. 3: 12.0 s wall for 11.7 s of CPU), while two
processes each keep a core. The CLI commands switch torch to one intra-op thread for the rest of the process and
never switch back: with torch 2.13's CPU build, calling ``torch.set_num_threads(n)`` with n >= 2 makes later
batched ``torch.linalg.solve`` calls fail inside MKL ("Pivots given to lu_solve must all be greater or equal to 1",
seen here), so a library function must not "restore" a thread count. Library callers keep their own setting; with
more than one intra-op thread the experiments simply run their trainings one after the other.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .lazy import lazy_module

torch = lazy_module("torch")

T = TypeVar("T")
R = TypeVar("R")


def use_one_intraop_thread() -> None:
    """For CLI commands only: one intra-op thread for the rest of the process (see the module docstring)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def worker_count(requested: int) -> int:
    """How many trainings to run side by side: ``requested`` when torch uses one intra-op thread, else 1."""
    return max(1, requested) if torch.get_num_threads() == 1 else 1


def can_fork() -> bool:
    """Whether worker processes may be forked from here: Linux, no other thread alive in this process (a lock held
    by another thread at the fork would stay held in the child) and torch on one intra-op thread (no OpenMP pool
    to inherit half-made)."""
    return sys.platform == "linux" and threading.active_count() == 1 and torch.get_num_threads() == 1


def stop_tqdm_monitor() -> None:
    """Stops tqdm's monitor thread, if one runs (an earlier progress bar started it; the next bar restarts it),
    so that it does not keep ``can_fork`` false."""
    tqdm_class = getattr(sys.modules.get("tqdm"), "tqdm", None)
    monitor = getattr(tqdm_class, "monitor", None)
    if monitor is not None:
        monitor.exit()
        tqdm_class.monitor = None


def run_side_by_side(
    fn: Callable[[T], R], items: Sequence[T], workers: int = 2, meanwhile: Callable[[], Any] | None = None
) -> list[R]:
    """``[fn(item) for item in items]``, up to ``workers`` at a time, in item order (give the longest first).

    Forked worker processes, one per item, where ``can_fork``; else Python threads (``worker_count``). Each item
    runs exactly as it would alone, so the results do not depend on the mode. ``meanwhile()`` runs once in the
    calling process, as soon as a core is left that no worker needs (the last items are running on fewer than
    ``workers``), else at the end (e.g. importing matplotlib for the figure that follows). A worker's exception is
    raised here, with the worker's traceback in its notes.
    """
    workers = worker_count(min(workers, len(items)))
    if workers > 1:
        stop_tqdm_monitor()
    if workers > 1 and can_fork():
        return _forked(fn, items, workers, meanwhile)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        if meanwhile is not None:
            meanwhile()
        return [f.result() for f in futures]


def _forked(fn: Callable[[T], R], items: Sequence[T], workers: int, meanwhile: Callable[[], Any] | None) -> list[R]:
    results: dict[int, Any] = {}
    running: dict[int, tuple[int, int]] = {}  # read end -> (item index, pid)
    todo = list(range(len(items)))
    try:
        while todo or running:
            while todo and len(running) < workers:
                i = todo.pop(0)
                read, pid = _fork_one(fn, items[i])
                running[read] = (i, pid)
            if meanwhile is not None and not todo and len(running) < workers:
                meanwhile()  # on a core no worker needs any more: it slows none of them
                meanwhile = None
            read = _first_ready(list(running))
            i, pid = running.pop(read)
            results[i] = _collect(read, pid)
    finally:
        for read, (_, pid) in running.items():  # an error or an interrupt: no worker outlives the call
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read)
    if meanwhile is not None:  # every core was busy until the end
        meanwhile()
    return [results[i] for i in range(len(items))]


def _fork_one(fn: Callable[[T], R], item: T) -> tuple[int, int]:
    """Forks a worker that computes ``fn(item)`` and writes it, pickled, to a pipe; returns (read end, pid)."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the caller's code
        os.close(read)
        code = 0
        try:
            try:
                payload = (True, fn(item))
            except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
                payload = (False, (exc, traceback.format_exc()))
            data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    return read, pid


def _first_ready(reads: list[int]) -> int:
    import select

    ready, _, _ = select.select(reads, [], [])
    return ready[0]


def _collect(read: int, pid: int) -> Any:
    """A worker's result (it is one of ours, forked by ``_fork_one``: its pickle is our own object, not a file's)."""
    with os.fdopen(read, "rb") as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"a worker process died without a result (wait status {status})")
    ok, value = pickle.loads(data)
    if ok:
        return value
    exc, trace = value
    exc.add_note(f"in a worker process:\n{trace}")
    raise exc
