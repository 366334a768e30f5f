"""Reading a sweep's run folders for a table (``collect_runs``): every run found by its ``spec.json`` /
``results.json`` under the sweep directories, the runs its ``sweep.json`` planned, and each run's state: done,
unfinished, not started, or damaged (an unreadable results.json, or an evaluation log its record names that is
missing or cannot be read: such a run is named under the table and left out of every mean)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MemawareError
from ..evallog import FILENAME as EVAL_LOG
from ..evallog import EvalLog
from ..methods import method_class
from ..runfolder import expects_evaluation_log


def method_rank(method: str) -> int:
    try:
        return method_class(method).rank
    except ConfigError:
        return 1000

DATASET_ORDER = ("waterbirds", "celeba", "multinli", "civilcomments")

@dataclass
class RunRecord:
    """One run directory: ``state`` is done, unfinished (a checkpoint, no results), not started or unreadable."""

    dir: Path
    dataset: str
    method: str
    comb: int
    seed: int
    state: str
    results: dict | None = None
    role: str = "sweep"
    spec: dict | None = None
    # criterion -> {"epoch", "val_score", "test"} or None: a table asks twice per run (rank, then report)
    chosen: dict[str, dict | None] = field(default_factory=dict, repr=False)
    log: EvalLog | None = field(default=None, repr=False)  # its evaluations.npz, read once


@dataclass
class Runs:
    """Every run found under the sweep directories, the methods and datasets in table order, planned seeds."""

    records: list[RunRecord]
    methods: list[str]
    datasets: list[str]
    seeds: dict[str, list[int]]  # dataset -> planned or found seeds

    @property
    def missing(self) -> list[RunRecord]:
        return [r for r in self.records if r.state != "done" and r.method in self.methods]


def record_state(d: Path, results: Any) -> tuple[str, EvalLog | None]:
    """(state, evaluation log) of a run folder holding a results.json: done, or what is damaged about it. A run
    whose record says it wrote an evaluation log is done only with that log readable: it is never scored from
    the less its results.json holds (a table would change silently)."""
    if not isinstance(results, dict) or not ("test" in results or criteria_of(results)):
        return "damaged: results.json cannot be read", None
    if not (d / EVAL_LOG).is_file():
        if expects_evaluation_log(results):
            return f"damaged: its {EVAL_LOG} is missing", None
        return ("done" if criteria_of(results) else "damaged: results.json holds no selection"), None
    try:
        return "done", EvalLog.load(d / EVAL_LOG)
    except MemawareError:
        return f"damaged: its {EVAL_LOG} cannot be read", None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dataset_name(spec: dict) -> str:
    """The table column of a run: ``spec['dataset']``, else the stem of ``spec['data']``."""
    if spec.get("dataset"):
        return str(spec["dataset"])
    if spec.get("data"):
        return Path(str(spec["data"])).stem
    return "data"


def _ordered(names: Iterable[str], canonical: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(names))
    return [n for n in canonical if n in seen] + [n for n in seen if n not in canonical]


def collect_runs(sweeps: Sequence[str | os.PathLike]) -> Runs:
    """Reads every run under ``sweeps`` (see the module docstring). Raises ``ConfigError`` for a missing folder."""
    records: dict[Path, RunRecord] = {}
    listed: list[str] = []
    seeds: dict[str, set[int]] = {}
    found_methods: list[str] = []
    has_manifest = False
    for sweep in sweeps:
        root = Path(sweep)
        if not root.is_dir():
            raise ConfigError(f"--sweep {sweep}: no such directory")
        manifest = _read_json(root / "sweep.json")
        if isinstance(manifest, dict):
            has_manifest = True
            listed += [m for m in manifest.get("methods", []) if isinstance(m, str)]
            for e in manifest.get("runs", []):
                if not isinstance(e, dict) or not {"dir", "dataset", "method", "comb", "seed"} <= set(e):
                    continue
                d = (root / e["dir"]).resolve()
                seeds.setdefault(e["dataset"], set()).add(int(e["seed"]))
                records[d] = RunRecord(
                    d,
                    e["dataset"],
                    e["method"],
                    int(e["comb"]),
                    int(e["seed"]),
                    "not started",
                    None,
                    e.get("role", "sweep"),
                )
        dirs = {p.parent for name in ("spec.json", "results.json") for p in root.rglob(name)}
        for d in sorted(dirs):
            if "submitit" in d.relative_to(root).parts:
                continue
            results = _read_json(d / "results.json") if (d / "results.json").is_file() else None
            spec = (results or {}).get("spec") if isinstance(results, dict) else None
            spec = spec if isinstance(spec, dict) else _read_json(d / "spec.json")
            if not isinstance(spec, dict) or "method" not in spec:
                continue
            log = None
            if (d / "results.json").is_file():
                state, log = record_state(d, results)
            else:
                state = "unfinished" if any(d.glob("checkpoint*.pt")) else "not started"
            key = d.resolve()
            prev = records.get(key)
            rec = RunRecord(
                key,
                dataset_name(spec),
                str(spec["method"]),
                int(spec.get("comb", 0)),
                int(spec.get("seed", 0)),
                state,
                results if state == "done" else None,
                prev.role if prev else "sweep",
                spec,
            )
            rec.log = log
            records[key] = rec
            found_methods.append(rec.method)
            seeds.setdefault(rec.dataset, set()).add(rec.seed)
    recs = list(records.values())
    groups_only = {r.method for r in recs if r.role == "groups"} - set(listed)
    methods = listed + [m for m in found_methods if m not in listed and not (has_manifest and m in groups_only)]
    methods = sorted(dict.fromkeys(methods), key=method_rank)  # the declared table order, then as found
    datasets = _ordered((r.dataset for r in recs), DATASET_ORDER)
    return Runs(recs, methods, datasets, {k: sorted(v) for k, v in seeds.items()})


def criteria_of(results: dict) -> dict:
    """{criterion: {"epoch", "val_score", "val", "test"}} of a results.json (key ``criteria``, or ``selection``
    when that is a dict)."""
    for key in ("criteria", "selection"):
        value = results.get(key)
        if isinstance(value, dict):
            return value
    return {}
