"""Random hyper-parameter search (paper Table 1): methods x combinations x seeds, one directory per run.

Layout: ``DIR/<method>/comb<k>_seed<s>/`` (``DIR/<dataset>/<method>/...`` when one sweep covers several datasets).
``spec.json`` (what ``memaware.runner.execute`` trains) is written before any run starts and ``results.json`` by the
run when it ends, so a directory with ``results.json`` is finished and skipped: running the same sweep again
resumes it, and a run that was killed resumes from its ``checkpoint.pt``. Methods that infer no groups of their own
(ERM, GroupDRO, SUBG, RWG, JTT) point ``inferred_groups`` at the XRM run of their seed (combination ``xrm_comb``,
default 0), which runs first, so that every run can also be selected by ``val_gi_wga``.

Executors: ``local`` (a process pool, spawn context, one intra-op torch thread per worker, ``jobs`` workers; with
``jobs=1`` the runs train one after the other in the sweep's own process),
``slurm`` (submitit's AutoExecutor: one job per run, in arrays of at most ``jobs`` running at once; a job that
reaches its time limit is requeued and resumes from its checkpoint) and ``submitit-local`` (the same code path run
on this machine by submitit's LocalExecutor). The unit of work handed to an executor is a *batch*, a list of runs
of one (method, data): one run per batch by default; with ``vectorized=True`` every run of a (method, data) forms
one batch, trained by ``memaware.vectorized.execute_many(specs, run_dirs)`` (``EXECUTE_MANY``).

``DIR/sweep.json`` (written atomically, after every finished run) lists the datasets, methods, seeds and every run
with its status: done, pending, failed, blocked (its XRM run failed) or busy (locked by another process).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import write_json
from .errors import ConfigError
from .executors import (  # noqa: F401  (EXECUTE / EXECUTE_MANY: run_sweep reads them here, tests patch them)
    CHECKPOINT,
    EXECUTE,
    EXECUTE_MANY,
    EXECUTORS,
    LOCK,
    RESULTS,
    SPEC,
    RunBatch,
    SlurmOptions,
    _Inline,
    _LocalPool,
    _Submitit,
    check_executor,
    import_submitit,
    resolve,
    run_batch,
)
from .hparams import check_method, needs_inferred_groups, sample_hparams

SCHEMA = "memaware.sweep/1"
IGNORED_SPEC_KEYS = ("device", "checkpoint_every")  # may change between a sweep and its resumption


@dataclass(frozen=True)
class DataSource:
    """What a run trains on: ``spec`` holds the data keys of a run spec; ``name`` is the table's column."""

    name: str
    spec: dict
    family: str

    @classmethod
    def from_npz(cls, path: str | os.PathLike, family: str = "features") -> DataSource:
        p = Path(path).resolve()
        return cls(name=p.stem, spec={"data": str(p)}, family=family)

    @classmethod
    def from_dataset(
        cls,
        name: str,
        data_dir: str | os.PathLike,
        family: str,
        backbone: str | None = None,
        weights: str | None = None,
    ) -> DataSource:
        spec: dict[str, Any] = {"dataset": name, "data_dir": str(Path(data_dir).resolve())}
        if backbone is not None:
            spec["backbone"] = backbone
        if weights is not None:
            spec["weights"] = str(Path(weights).resolve()) if Path(weights).exists() else weights
        return cls(name=name, spec=spec, family=family)


@dataclass
class Run:
    """One training run of a sweep. ``role`` is 'groups' for an XRM run that only provides inferred groups;
    ``needs`` is the run directory whose ``results.json`` must exist first."""

    dataset: str
    method: str
    comb: int
    seed: int
    run_dir: Path
    spec: dict
    role: str = "sweep"
    needs: Path | None = None

    @property
    def done(self) -> bool:
        return (self.run_dir / RESULTS).is_file()

    def rel(self, root: Path) -> str:
        return _rel(self.run_dir, root)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def run_dir_name(comb: int, seed: int) -> str:
    return f"comb{comb}_seed{seed}"


def plan_sweep(
    sources: Sequence[DataSource],
    methods: Sequence[str],
    n_hparams: int,
    seeds: Sequence[int],
    out: str | os.PathLike,
    *,
    selection: str = "auto",
    device: str = "cpu",
    fixed: dict[str, Any] | None = None,
    inferred_groups: bool = True,
    xrm_comb: int = 0,
    checkpoint_every: int | None = None,
) -> list[Run]:
    """Every run of the sweep, XRM group-inference runs first, then combination by combination (so that a
    partial sweep already covers every method and seed). ``checkpoint_every`` (epochs) goes into each spec when
    given (the runner's default is time-based). Writes nothing."""
    if not sources:
        raise ConfigError("a sweep needs at least one dataset")
    if not methods:
        raise ConfigError("a sweep needs at least one method")
    for m in methods:
        check_method(m)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods lists a method twice: {','.join(methods)}")
    if n_hparams < 1:
        raise ConfigError(f"--n-hparams must be >= 1, got {n_hparams}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"seeds must be distinct and >= 0, got {list(seeds)}")
    if xrm_comb < 0:
        raise ConfigError(f"--xrm-comb must be >= 0, got {xrm_comb}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"two datasets of one sweep have the same name: {', '.join(names)}")
    out = Path(out).resolve()
    runs: list[Run] = []
    for src in sources:
        root = out if len(sources) == 1 else out / src.name
        make = functools.partial(_make_run, src, root, selection, device, fixed, checkpoint_every)

        groups = inferred_groups and any(needs_inferred_groups(m) for m in methods)
        xrm_dirs: dict[int, Path] = {}
        if groups:
            role = "sweep" if "xrm" in methods and xrm_comb < n_hparams else "groups"
            for seed in seeds:
                r = make("xrm", xrm_comb, seed, role)
                xrm_dirs[seed] = r.run_dir
                runs.append(r)
        for comb in range(n_hparams):
            for seed in seeds:
                for method in methods:
                    if method == "xrm" and groups and comb == xrm_comb:
                        continue  # already planned above
                    needs = xrm_dirs.get(seed) if needs_inferred_groups(method) else None
                    runs.append(make(method, comb, seed, needs=needs))
    return runs


def _make_run(
    src: DataSource,
    root: Path,
    selection: str,
    device: str,
    fixed: dict[str, Any] | None,
    checkpoint_every: int | None,
    method: str,
    comb: int,
    seed: int,
    role: str = "sweep",
    needs: Path | None = None,
) -> Run:
    hparams = sample_hparams(method, src.family, comb, seed, dataset=src.spec.get("dataset"), fixed=fixed)
    spec: dict[str, Any] = {
        "method": method,
        **src.spec,
        "seed": int(seed),
        "comb": int(comb),
        "hparams": hparams,
        "selection": selection,
        "device": device,
    }
    if needs is not None:
        spec["inferred_groups"] = str(needs / "inferred_groups.npz")
    if checkpoint_every is not None:
        spec["checkpoint_every"] = int(checkpoint_every)
    folder = method.replace(":", "--")  # a user's module:Class reference makes a portable folder name
    return Run(src.name, method, comb, seed, root / folder / run_dir_name(comb, seed), spec, role, needs)


def _spec_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first key where two specs differ (ignoring IGNORED_SPEC_KEYS at the top level), or None."""
    keys = sorted(set(old) | set(new))
    for k in keys:
        if not prefix and k in IGNORED_SPEC_KEYS:
            continue
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diff = _spec_difference(a, b, f"{prefix}{k}.")
            if diff:
                return diff
        elif a != b:
            return f"{prefix}{k}: {a!r} there, {b!r} now"
    return None


def check_specs(runs: Iterable[Run]) -> None:
    """Raises ``ConfigError`` when a run directory already holds the spec of a different run."""
    for r in runs:
        path = r.run_dir / SPEC
        if not path.is_file():
            continue
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: rewritten below
        diff = _spec_difference(old, json.loads(json.dumps(r.spec)))
        if diff:
            raise ConfigError(
                f"{path} was written for a different run ({diff}); use another --out or delete that directory"
            )


# ---------------------------------------------------------------------------------------------------------------
# The scheduler.


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


class _Manifest:
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
                if (out / e["dir"] / RESULTS).is_file():
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
) -> SweepSummary:
    """Trains every run of ``runs`` that has no ``results.json`` yet and returns a ``SweepSummary``.

    ``execute`` is a 'module:function' reference (default ``EXECUTE``, or ``EXECUTE_MANY`` when ``vectorized``);
    ``info`` goes into the manifest (the sweep's settings); ``log`` receives one line per failed run (default:
    stderr). A run whose XRM run failed or wrote no ``inferred_groups.npz`` is 'blocked', not trained.
    """
    check_executor(executor)
    out = Path(out).resolve()
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
    check_specs(runs)
    t0 = time.perf_counter()
    todo = [r for r in runs if not r.done]
    summary = SweepSummary(total=len(runs), already_done=len(runs) - len(todo))
    backend: Any = None
    if todo and executor == "local":
        backend = _Inline(execute, vectorized) if jobs == 1 else _LocalPool(jobs, execute, vectorized)
    elif todo:
        opts = slurm or SlurmOptions()
        folder = Path(opts.folder) if opts.folder else out / "submitit"
        cluster = "slurm" if executor == "slurm" else "local"
        backend = _Submitit(cluster, opts, folder, jobs, execute, vectorized)
    for r in todo:
        if not (r.run_dir / SPEC).is_file():
            write_json(r.run_dir / SPEC, r.spec)
    manifest = _Manifest(out, runs, info or {})
    manifest.write()
    summary.manifest = manifest.path
    log = log or (lambda line: print(line, file=sys.stderr))
    if not todo:
        summary.seconds = time.perf_counter() - t0
        return summary

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not sys.stderr.isatty())
    waiting = make_batches(todo, vectorized)
    status: dict[Path, str] = {}  # run dir -> outcome of this session
    inflight: dict[Any, list[Run]] = {}

    def dep_state(r: Run) -> str:
        if r.needs is None:
            return "ok"
        if (r.needs / RESULTS).is_file():
            if r.spec.get("inferred_groups") and not Path(r.spec["inferred_groups"]).is_file():
                return f"blocked: {_rel(r.needs, out)} wrote no inferred_groups.npz"
            return "ok"
        s = status.get(r.needs)
        if s in ("failed", "busy") or s and s.startswith("blocked"):
            return f"blocked: its XRM run {_rel(r.needs, out)} did not finish"
        return "wait"

    def finish(r: Run, outcome: dict) -> None:
        status[r.run_dir] = outcome["status"]
        manifest.update(r, outcome)
        if outcome["status"] == "done":
            summary.done += 1
        elif outcome["status"] == "busy":
            summary.busy.append(r.rel(out))
            log(f"sweep: {r.rel(out)} is locked by another process (another sweep on this directory?)")
        else:
            summary.failed.append((r.rel(out), outcome.get("error") or outcome["status"]))
            if len(summary.failed) <= 10:
                log(f"sweep: {r.rel(out)} {outcome['status']}: {outcome.get('error')}")
            elif len(summary.failed) == 11:
                log("sweep: more runs failed; every error is in sweep.json and the runs' error.txt")
        bar.update(1)

    try:
        while waiting or inflight:
            ready: list[list[Run]] = []
            still: list[list[Run]] = []
            for batch in waiting:
                states = [dep_state(r) for r in batch]
                if any(s == "wait" for s in states):
                    still.append(batch)
                    continue
                runnable = []
                for r, s in zip(batch, states, strict=True):
                    if s == "ok":
                        runnable.append(r)
                    else:
                        finish(r, {"status": "blocked", "seconds": 0.0, "error": s.removeprefix("blocked: ")})
                if runnable:
                    ready.append(runnable)
            room = len(ready) if backend.capacity is None else max(0, backend.capacity - len(inflight))
            submit, waiting = ready[:room], ready[room:] + still
            if submit:
                handles = backend.submit([[(r.spec, str(r.run_dir)) for r in b] for b in submit])
                inflight.update(zip(handles, submit, strict=True))
            if not inflight:
                if waiting:  # dependencies that can never be met
                    for b in waiting:
                        for r in b:
                            finish(r, {"status": "blocked", "seconds": 0.0, "error": "its XRM run is not planned"})
                    waiting = []
                break
            for h in backend.wait(list(inflight)):
                batch = inflight.pop(h)
                res = backend.result(h)
                if isinstance(res, str):
                    for r in batch:
                        finish(r, {"status": "failed", "seconds": None, "error": res})
                else:
                    for r, o in zip(batch, res, strict=True):
                        finish(r, o)
            manifest.write(force=False)
    except BaseException:
        for batch in inflight.values():
            for r in batch:
                manifest.update(r, {"status": "pending", "seconds": None, "error": "interrupted"})
        backend.close(kill=True)
        manifest.write()
        bar.close()
        raise
    backend.close()
    bar.close()
    manifest.write()
    summary.seconds = time.perf_counter() - t0
    return summary


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


__all__ = [
    "DataSource",
    "Run",
    "SlurmOptions",
    "SweepSummary",
    "plan_sweep",
    "run_sweep",
    "run_batch",
    "make_batches",
    "check_specs",
    "describe",
]
