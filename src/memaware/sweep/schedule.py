"""Running a planned sweep: batches of runs handed to an executor, the ``DIR/sweep.json`` manifest rewritten as runs
finish, dependencies on the XRM runs that give inferred groups, and the closing summary (see ``sweep.plan`` for the
directory layout and the executors)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..errors import ConfigError
from ..runfolder import RunFolder, lock_or_refuse, read_results, stale_note
from .executors import (
    EXECUTE,
    EXECUTE_MANY,
    RESULTS,
    SPEC,
    InlineExecutor,
    LocalPoolExecutor,
    SlurmOptions,
    SubmititExecutor,
    check_executor,
    resolve,
)
from .plan import SCHEMA, Run, check_specs, relative_path, spec_path


@dataclass
class SweepSummary:
    """Counts of one ``run_sweep`` call; ``failed`` lists (run dir, error) of failed and blocked runs."""

    total: int
    already_done: int
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    seconds: float = 0.0
    manifest: Path | None = None

    @property
    def complete(self) -> bool:
        return not self.failed and not self.busy and self.already_done + self.done == self.total


def batch_key(run: Run) -> tuple[str, str, str]:
    """Runs that a vectorized executor may train together: same method and data (not the same seed or comb)."""
    data = json.dumps({k: run.spec.get(k) for k in ("data", "dataset", "data_dir", "backbone", "weights")})
    return run.dataset, run.method, data


def make_batches(runs: Sequence[Run], vectorized: bool) -> list[list[Run]]:
    """One run per batch, or (vectorized) all runs of a (method, data) that have the same dependency status."""
    if not vectorized:
        return [[r] for r in runs]
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((*batch_key(r), r.needs is None), []).append(r)
    return list(groups.values())


class Manifest:
    """DIR/sweep.json: merged with what an earlier invocation left, rewritten atomically as runs finish."""

    def __init__(self, out: Path, runs: Sequence[Run], info: dict[str, Any]) -> None:
        self.path = out / "sweep.json"
        self.out = out
        old: dict[str, Any] = {}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
            except (OSError, ValueError):
                old = {}
        entries: dict[str, dict] = {}
        for e in old.get("runs", []):
            if isinstance(e, dict) and "dir" in e:
                entries[e["dir"]] = e
                if read_results(out / e["dir"] / RESULTS) is not None:
                    e["status"] = "done"
        for r in runs:
            key = r.rel(out)
            prev = entries.get(key, {})
            entries[key] = {
                "dir": key,
                "dataset": r.dataset,
                "method": r.method,
                "comb": r.comb,
                "seed": r.seed,
                "role": r.role,
                "status": "done" if r.done else "pending",
                "seconds": prev.get("seconds") if r.done else None,
                "error": None,
            }
        methods = list(old.get("methods", []))
        methods += [m for m in info.get("methods", []) if m not in methods]
        datasets = {d["name"]: d for d in old.get("datasets", []) if isinstance(d, dict) and "name" in d}
        datasets.update({d["name"]: d for d in info.get("datasets", [])})
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            **{k: v for k, v in old.items() if k not in ("runs", "methods", "datasets")},
            **info,
            "methods": methods,
            "datasets": list(datasets.values()),
            "created": old.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
            "runs": list(entries.values()),
        }
        self._index = {e["dir"]: e for e in self.doc["runs"]}
        self._last = 0.0

    def update(self, run: Run, outcome: dict) -> None:
        e = self._index[run.rel(self.out)]
        e["status"], e["seconds"], e["error"] = outcome["status"], outcome.get("seconds"), outcome.get("error")

    def write(self, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._last < 1.0:
            return
        self._last = now
        self.doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        counts: dict[str, int] = {}
        for e in self.doc["runs"]:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        self.doc["counts"] = counts
        write_json(self.path, self.doc)


@dataclass(frozen=True)
class SweepSettings:
    """How a sweep's runs are executed, checked before anything is written (``check_settings``)."""

    executor: str
    jobs: int
    vectorized: bool
    execute: str
    slurm: SlurmOptions


def check_settings(
    executor: str, jobs: int | None, vectorized: bool, slurm: SlurmOptions | None, execute: str | None
) -> SweepSettings:
    """The executor, the number of jobs and the run function, each refused in one line when it cannot work; for
    Slurm, a request no node can run (it would pend forever)."""
    check_executor(executor)
    execute = execute or (EXECUTE_MANY if vectorized else EXECUTE)
    if jobs is None:
        jobs = 256 if executor == "slurm" else (os.cpu_count() or 1)
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if vectorized and execute == EXECUTE_MANY:
        try:
            resolve(execute)
        except ConfigError:
            raise ConfigError(f"--vectorized: this version has no {EXECUTE_MANY}; run without --vectorized") from None
    resolve(execute)  # fail here, not in every worker
    opts = slurm or SlurmOptions()
    if executor == "slurm":
        from .slurm import check_request

        check_request(opts.partition, opts.cpus, opts.mem_gb, opts.gpus)
    return SweepSettings(executor, jobs, vectorized, execute, opts)


def make_backend(settings: SweepSettings, out: Path) -> Any:
    """The executor that trains the sweep's batches: in this process, a local pool, or submitit."""
    s = settings
    if s.executor == "local":
        return InlineExecutor(s.execute, s.vectorized) if s.jobs == 1 else LocalPoolExecutor(
            s.jobs, s.execute, s.vectorized
        )
    folder = Path(s.slurm.folder) if s.slurm.folder else out / "submitit"
    cluster = "slurm" if s.executor == "slurm" else "local"
    return SubmititExecutor(cluster, s.slurm, folder, s.jobs, s.execute, s.vectorized)


class Scheduler:
    """One ``run_sweep`` call's runs in flight: batches wait for their XRM run, are submitted while the backend has
    room, and every outcome reaches the manifest, the summary, the log and the bar."""

    def __init__(self, out: Path, manifest: Manifest, summary: SweepSummary, log: Callable[[str], None],
                 bar: Any) -> None:  # fmt: skip
        self.out, self.manifest, self.summary, self.log, self.bar = out, manifest, summary, log, bar
        self.status: dict[Path, str] = {}  # run dir -> outcome of this session
        self.inflight: dict[Any, list[Run]] = {}

    def dep_state(self, r: Run) -> str:
        """ok, wait (its XRM run has not finished yet) or 'blocked: why'."""
        if r.needs is None:
            return "ok"
        if (r.needs / RESULTS).is_file():
            groups = r.spec.get("inferred_groups")
            if groups and not spec_path(r.run_dir, groups).is_file():
                return f"blocked: {relative_path(r.needs, self.out)} wrote no inferred_groups.npz"
            return "ok"
        s = self.status.get(r.needs)
        if s in ("failed", "busy") or s and s.startswith("blocked"):
            return f"blocked: its XRM run {relative_path(r.needs, self.out)} did not finish"
        return "wait"

    def finish(self, r: Run, outcome: dict) -> None:
        self.status[r.run_dir] = outcome["status"]
        self.manifest.update(r, outcome)
        summary, rel = self.summary, r.rel(self.out)
        if outcome["status"] == "done":
            summary.done += 1
        elif outcome["status"] == "busy":
            summary.busy.append(rel)
            self.log(f"sweep: {rel} is locked by another process (another sweep on this directory?)")
        else:
            summary.failed.append((rel, outcome.get("error") or outcome["status"]))
            if len(summary.failed) <= 10:
                self.log(f"sweep: {rel} {outcome['status']}: {outcome.get('error')}")
            elif len(summary.failed) == 11:
                self.log("sweep: more runs failed; every error is in sweep.json and the runs' error.txt")
        self.bar.update(1)

    def split_ready(self, waiting: list[list[Run]]) -> tuple[list[list[Run]], list[list[Run]]]:
        """(batches whose dependencies are met, less their blocked runs; batches still waiting)."""
        ready: list[list[Run]] = []
        still: list[list[Run]] = []
        for batch in waiting:
            states = [self.dep_state(r) for r in batch]
            if any(s == "wait" for s in states):
                still.append(batch)
                continue
            runnable = []
            for r, s in zip(batch, states, strict=True):
                if s == "ok":
                    runnable.append(r)
                else:
                    self.finish(r, {"status": "blocked", "seconds": 0.0, "error": s.removeprefix("blocked: ")})
            if runnable:
                ready.append(runnable)
        return ready, still

    def collect(self, backend: Any) -> None:
        """Waits for batches in flight and records their outcomes."""
        for h in backend.wait(list(self.inflight)):
            batch = self.inflight.pop(h)
            res = backend.result(h)
            if isinstance(res, str):
                for r in batch:
                    self.finish(r, {"status": "failed", "seconds": None, "error": res})
            else:
                for r, o in zip(batch, res, strict=True):
                    self.finish(r, o)

    def drive(self, backend: Any, waiting: list[list[Run]]) -> None:
        """Submits and collects until every batch has an outcome."""
        while waiting or self.inflight:
            ready, still = self.split_ready(waiting)
            room = len(ready) if backend.capacity is None else max(0, backend.capacity - len(self.inflight))
            submit, waiting = ready[:room], ready[room:] + still
            if submit:
                handles = backend.submit([[(r.spec, str(r.run_dir)) for r in b] for b in submit])
                self.inflight.update(zip(handles, submit, strict=True))
            if not self.inflight:
                for b in waiting:  # dependencies that can never be met
                    for r in b:
                        self.finish(r, {"status": "blocked", "seconds": 0.0, "error": "its XRM run is not planned"})
                return
            self.collect(backend)
            self.manifest.write(force=False)

    def interrupted(self) -> None:
        """Runs in flight go back to pending (they resume from their checkpoints next time)."""
        for batch in self.inflight.values():
            for r in batch:
                self.manifest.update(r, {"status": "pending", "seconds": None, "error": "interrupted"})


def run_sweep(
    runs: Sequence[Run],
    out: str | os.PathLike,
    *,
    executor: str = "local",
    jobs: int | None = None,
    vectorized: bool = False,
    slurm: SlurmOptions | None = None,
    execute: str | None = None,
    info: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> SweepSummary:
    """Trains every run of ``runs`` that has no readable ``results.json`` yet and returns a ``SweepSummary``.

    ``execute`` is a 'module:function' reference (default ``EXECUTE``, or ``EXECUTE_MANY`` when ``vectorized``);
    ``info`` goes into the manifest (the sweep's settings); ``log`` receives one line per failed run (default:
    stderr). A run whose XRM run failed or wrote no ``inferred_groups.npz`` is 'blocked', not trained. A second
    sweep on the same folder is refused (``ConfigError``) while this one runs; a run folder holding another spec,
    or a run on data that changed since, is refused unless ``overwrite`` (then it is cleared and trained again).
    """
    settings = check_settings(executor, jobs, vectorized, slurm, execute)
    check_specs(runs, overwrite)  # refused before the folder is touched
    out = Path(out).resolve()
    t0 = time.perf_counter()
    lock = lock_or_refuse(out, "sweep folder")
    stale_note(lock, log)
    try:
        clear_conflicts(check_specs(runs, overwrite), out, log or _stderr)
        todo = [r for r in runs if not r.done]
        summary = SweepSummary(total=len(runs), already_done=len(runs) - len(todo))
        for r in todo:
            if read_spec(r.run_dir / SPEC) is None:  # missing or unreadable
                write_json(r.run_dir / SPEC, r.spec)
        manifest = Manifest(out, runs, info or {})
        manifest.write()
        summary.manifest = manifest.path
        if todo:
            train(settings, out, todo, Scheduler(out, manifest, summary, log or _stderr, None), progress)
    finally:
        lock.release()
    summary.seconds = time.perf_counter() - t0
    return summary


def read_spec(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def clear_conflicts(runs: list[Run], out: Path, log: Callable[[str], None]) -> None:
    """``--overwrite``: the folders of ``runs`` (another spec, or data changed since) lose memaware's files of the
    earlier run and its spec.json (never a user's file), so that they are trained again."""
    if not runs:
        return
    removed = 0
    for r in runs:
        removed += len(RunFolder(r.run_dir).clear())
        (r.run_dir / SPEC).unlink(missing_ok=True)
    log(f"sweep: --overwrite cleared {len(runs)} run folder(s) of another spec or data ({removed} files) in {out}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def train(settings: SweepSettings, out: Path, todo: list[Run], scheduler: Scheduler, progress: bool) -> None:
    """Trains ``todo`` through the settings' backend; on any exception (Ctrl-C included) the workers are stopped
    and the manifest says which runs are pending again."""
    from tqdm import tqdm

    backend = make_backend(settings, out)
    scheduler.bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not sys.stderr.isatty())
    try:
        scheduler.drive(backend, make_batches(todo, settings.vectorized))
    except BaseException:
        scheduler.interrupted()
        backend.close(kill=True)
        scheduler.manifest.write()
        scheduler.bar.close()
        raise
    backend.close()
    scheduler.bar.close()
    scheduler.manifest.write()


def describe(summary: SweepSummary, out: Path) -> str:
    """The lines printed at the end of ``memaware sweep``."""
    lines = [
        f"sweep: {summary.total} runs: {summary.already_done} already done, {summary.done} trained, "
        f"{len(summary.failed)} failed, {len(summary.busy)} locked elsewhere ({summary.seconds:.1f} s) "
        f"-> {summary.manifest}"
    ]
    for d, err in summary.failed[:10]:
        lines.append(f"  failed: {d}: {err}")
    if len(summary.failed) > 10:
        lines.append(f"  ... and {len(summary.failed) - 10} more (see sweep.json)")
    if summary.complete:
        lines.append(f"  next: memaware table --sweep {out}")
    else:
        lines.append("  run the same command again to resume (finished runs are skipped)")
    return "\n".join(lines)
