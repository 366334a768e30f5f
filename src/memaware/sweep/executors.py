"""Where sweep runs train: a batch of runs executed in this process, a local process pool, or Slurm through
submitit (``memaware.sweep`` schedules them; this module only executes)."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..artifacts import atomic_writer
from ..errors import ConfigError
from ..runfolder import FolderLock, read_results
from .slurm import QueueWatch, SlurmOptions

EXECUTE = "memaware.sweep.runner:execute"  # (spec, run_dir) -> results; a "module:function" so that workers import it
EXECUTE_MANY = "memaware.engine.many:execute_many"  # (specs, run_dirs) -> results; runs of one (method, data)
EXECUTORS = ("local", "slurm", "submitit-local")
RESULTS, SPEC, CHECKPOINT, LOCK = "results.json", "spec.json", "checkpoint.pt", ".lock"

# ---------------------------------------------------------------------------------------------------------------
# Workers: what runs in a pool process or a Slurm job.


def resolve(ref: str) -> Callable[..., Any]:
    """'package.module:function' -> the function."""
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load the run function '{ref}' ({e})") from None


def _init_local_worker(parent_pid: int) -> None:
    """Pool worker start-up: one intra-op torch thread (see memaware.threads), and exit when the sweep dies (a
    SIGKILLed parent leaves its workers behind otherwise, still training and holding their run locks)."""
    import signal

    from ..threads import use_one_intraop_thread

    use_one_intraop_thread()
    # Ctrl-C reaches the whole process group: the sweep handles it (and stops its workers), workers ignore it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm would create a multiprocessing lock (a named semaphore) in each worker; a worker killed on Ctrl-C never
    # releases it and Python warns of 'leaked semaphore objects' at exit. Workers draw no bars: a thread lock does.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    if sys.platform.startswith("linux"):
        try:  # the kernel kills this worker the moment the sweep dies (PR_SET_PDEATHSIG = 1)
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(3)

    def watch() -> None:  # elsewhere (and as a fallback): notice within 0.2 s
        while True:
            time.sleep(0.2)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watch, name="memaware-parent-watch", daemon=True).start()


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:500]


def _record_error(run_dir: Path, e: BaseException) -> None:
    text = "".join(traceback.format_exception(e))
    try:
        atomic_writer(run_dir / "error.txt", lambda p: p.write_text(text), ".txt")
    except OSError:
        pass


def absolute_paths(spec: dict, run_dir: Path) -> dict:
    """``spec`` with the paths a sweep writes relative to the run folder made absolute."""
    out = dict(spec)
    for key in ("data", "data_dir", "image_root", "inferred_groups"):
        value = out.get(key)
        if isinstance(value, str) and not os.path.isabs(value):
            out[key] = os.path.normpath(os.path.join(os.path.abspath(run_dir), value))
    return out


def run_batch(items: Sequence[tuple[dict, str]], execute: str = EXECUTE, vectorized: bool = False) -> list[dict]:
    """Trains the runs ``items`` = [(spec, run_dir)] (all of one method and data when ``vectorized``) and returns
    one outcome per run: {"run_dir", "status": done|failed|busy, "seconds", "error"}. Never raises for a failed run:
    its traceback goes to ``run_dir/error.txt``."""
    outcomes: dict[str, dict] = {}
    locks: list[FolderLock] = []
    todo: list[tuple[dict, Path, str]] = []
    try:
        for spec, d in items:
            run_dir = Path(d)
            lock = FolderLock(run_dir)
            if not lock.acquire():
                outcomes[d] = {"run_dir": d, "status": "busy", "seconds": 0.0, "error": "locked by another process"}
                continue
            locks.append(lock)
            if read_results(run_dir / RESULTS) is not None:  # a damaged record is trained again
                outcomes[d] = {"run_dir": d, "status": "done", "seconds": 0.0, "error": None}
            else:  # memaware's run functions read a sweep's relative paths themselves; a user's gets them absolute
                todo.append((spec if execute in (EXECUTE, EXECUTE_MANY) else absolute_paths(spec, run_dir), run_dir, d))
        if todo:
            (_vectorized if vectorized else _one_by_one)(todo, execute, outcomes)
    finally:
        for lock in locks:
            lock.release()
    return [outcomes[d] for _, d in items]


def _one_by_one(todo: list[tuple[dict, Path, str]], execute: str, outcomes: dict[str, dict]) -> None:
    fn = resolve(execute)
    for spec, run_dir, key in todo:
        t0 = time.perf_counter()
        try:
            fn(spec, run_dir)
            ok = (run_dir / RESULTS).is_file()
            err = None if ok else f"{execute} returned without writing {RESULTS}"
            if ok:
                (run_dir / "error.txt").unlink(missing_ok=True)  # of an earlier, failed attempt
        except Exception as e:  # one failed run must not stop the others
            _record_error(run_dir, e)
            ok, err = False, _error_text(e)
        outcomes[key] = {
            "run_dir": key,
            "status": "done" if ok else "failed",
            "seconds": time.perf_counter() - t0,
            "error": err,
        }


def _vectorized(todo: list[tuple[dict, Path, str]], execute: str, outcomes: dict[str, dict]) -> None:
    fn = resolve(execute)
    t0 = time.perf_counter()
    err: str | None = None
    try:
        fn([s for s, _, _ in todo], [d for _, d, _ in todo])
    except Exception as e:
        for _, d, _ in todo:
            _record_error(d, e)
        err = _error_text(e)
    seconds = (time.perf_counter() - t0) / len(todo)
    for _, d, key in todo:
        ok = (d / RESULTS).is_file()  # the others of the batch may have failed
        outcomes[key] = {
            "run_dir": key,
            "status": "done" if ok else "failed",
            "seconds": seconds,
            "error": None if ok else (err or f"{execute} wrote no {RESULTS}"),
        }


class RunBatch:
    """A picklable batch for submitit. Its ``checkpoint`` method makes a job that reaches its time limit requeue
    itself (the runs resume from their checkpoints; finished ones are skipped)."""

    def __init__(self, items: Sequence[tuple[dict, str]], execute: str, vectorized: bool) -> None:
        self.items = [(dict(s), str(d)) for s, d in items]
        self.execute = execute
        self.vectorized = vectorized

    def __call__(self) -> list[dict]:
        return run_batch(self.items, self.execute, self.vectorized)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Executors: submit batches, report the finished ones.


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored for the few milliseconds of starting a process (main thread only): an ignored signal stays
    ignored across exec, and a Python started so never raises KeyboardInterrupt."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def _pool_class() -> type:
    """A ProcessPoolExecutor whose workers never see Ctrl-C, from their first instruction (a worker still importing
    torch would otherwise die with a KeyboardInterrupt traceback): each is started with SIGINT ignored, only for the
    time of its fork and exec, so the sweep itself keeps Ctrl-C and stops its workers."""
    from concurrent.futures import ProcessPoolExecutor

    class QuietWorkersPool(ProcessPoolExecutor):
        def _spawn_process(self) -> None:  # ProcessPoolExecutor's hook that starts one worker (Python >= 3.9)
            with _sigint_ignored():
                super()._spawn_process()  # type: ignore[misc]

    return QuietWorkersPool if hasattr(ProcessPoolExecutor, "_spawn_process") else ProcessPoolExecutor


class LocalPoolExecutor:
    """A spawn-context process pool with one intra-op thread per worker."""

    def __init__(self, jobs: int, execute: str, vectorized: bool) -> None:
        self.jobs, self.execute, self.vectorized = jobs, execute, vectorized
        self.capacity = jobs
        self._pool: Any = None

    def _ensure(self) -> Any:
        if self._pool is None:
            import multiprocessing

            self._pool = _pool_class()(
                max_workers=self.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_local_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    def submit(self, batches: list[list[tuple[dict, str]]]) -> list[Any]:
        pool = self._ensure()
        return [pool.submit(run_batch, b, self.execute, self.vectorized) for b in batches]

    def wait(self, handles: list[Any]) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as fwait

        done, _ = fwait(handles, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Any) -> list[dict] | str:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return handle.result()
        except BrokenProcessPool:
            self.close(kill=True)  # a new pool for what is left
            return "a worker process died (out of memory, or killed?)"
        except Exception as e:
            return _error_text(e)

    def close(self, kill: bool = False) -> None:
        if self._pool is not None:
            if kill:
                for p in list((getattr(self._pool, "_processes", None) or {}).values()):
                    p.kill()
            # wait even after a kill: the pool's queues are closed then, and their semaphores released (no
            # "leaked semaphore objects" warning at exit); with its workers dead this takes milliseconds
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class InlineExecutor:
    """``local`` with one job: the runs train one after the other in this process (no start-up cost, debuggable)."""

    capacity = 1

    def __init__(self, execute: str, vectorized: bool) -> None:
        self.execute, self.vectorized = execute, vectorized

    class _Handle:
        def __init__(self, batch: list[tuple[dict, str]]) -> None:
            self.batch = batch
            self.result: list[dict] = []

    def submit(self, batches: list[list[tuple[dict, str]]]) -> list[Any]:
        return [self._Handle(b) for b in batches]

    def wait(self, handles: list[Any]) -> list[Any]:
        h = handles[0]
        h.result = run_batch(h.batch, self.execute, self.vectorized)
        return [h]

    def result(self, handle: Any) -> list[dict] | str:
        return handle.result

    def close(self, kill: bool = False) -> None:
        pass


def import_submitit() -> Any:
    """submitit, or a one-line ``ConfigError`` telling how to install it."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--executor slurm needs submitit: install memaware[slurm] (pip install 'submitit>=1.5')"
        ) from None
    return submitit


def check_executor(executor: str) -> None:
    """Raises a one-line ``ConfigError`` when ``executor`` cannot run here (unknown, no submitit, no sbatch)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got '{executor}'")
    if executor != "local":
        import_submitit()
    if executor == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm: sbatch not found (run the sweep on a Slurm login node)")


class SubmititExecutor:
    """submitit's AutoExecutor: ``cluster='slurm'`` submits job arrays; ``'local'`` runs the jobs here. On Slurm the
    queue is read with squeue/scontrol (``sweep.slurm``): a job that leaves it without results (scancel, node
    failure, out of memory) is reported failed with its reason, and one pending for a reason that never resolves
    is cancelled and reported."""

    def __init__(self, cluster: str, opts: SlurmOptions, folder: Path, jobs: int, execute: str, vectorized: bool):
        submitit = import_submitit()
        self.cluster = cluster
        self.execute, self.vectorized = execute, vectorized
        self.capacity = jobs if cluster == "local" else None  # Slurm throttles arrays itself
        self.poll_s = 0.2 if cluster == "local" else opts.poll_s
        kwargs = {"slurm_max_num_timeout": opts.max_requeues} if cluster == "slurm" else {}
        self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster, **kwargs)
        params: dict[str, Any] = {
            "name": "memaware-sweep",
            "timeout_min": int(opts.time_min),
            "gpus_per_node": int(opts.gpus),
            "cpus_per_task": int(opts.cpus),
            "mem_gb": float(opts.mem_gb),
            "slurm_array_parallelism": int(jobs),
        }
        if cluster == "slurm":
            params["slurm_signal_delay_s"] = opts.signal_delay_s
        if opts.partition:
            params["slurm_partition"] = opts.partition
        params.update(opts.extra)
        try:
            self.ex.update_parameters(**params)
        except (NameError, ValueError, AssertionError) as e:
            raise ConfigError(f"submitit rejected the job parameters: {str(e).splitlines()[0]}") from None
        self._watch = QueueWatch()  # why each job that left the queue without results did so

    def submit(self, batches: list[list[tuple[dict, str]]]) -> list[Any]:
        return self.ex.submit_array([RunBatch(b, self.execute, self.vectorized) for b in batches])

    def wait(self, handles: list[Any]) -> list[Any]:
        while True:
            if self.cluster == "slurm":
                self._watch.look(handles)
                done = [h for h in handles if h in self._watch.ended or h.paths.result_pickle.exists()]
            else:
                done = [h for h in handles if h.done()]
            if done:
                return done
            time.sleep(self.poll_s)

    def result(self, handle: Any) -> list[dict] | str:
        if handle in self._watch.ended:
            return self._watch.ended.pop(handle)
        try:
            return handle.result()
        except Exception as e:
            return f"job {handle.job_id}: {_error_text(e)}"

    def close(self, kill: bool = False) -> None:
        pass  # Slurm jobs outlive the sweep; a re-run collects what they wrote
