"""Paper Table 1 from sweep directories: per dataset, test average and worst-group accuracy of each method, mean +-
std over seeds, where each seed's run is the hyper-parameter combination that a validation criterion prefers.

Runs are found by their ``spec.json`` / ``results.json`` anywhere under each sweep directory (the dataset is read
from the spec: ``dataset``, or the stem of the ``data`` file), so several sweep directories, or several datasets in
one, make one table. ``sweep.json`` manifests say which runs were planned: those without results are reported as
missing, and the table shows what exists (a cell over fewer seeds than planned is marked).

Protocols: ``per-seed`` (default): for every seed, the combination with the best validation score of the criterion
(ties: the lower combination index); ``first-seed``: the combination best on the first seed, reported over all
seeds (the authors' read_results). The std is over seeds with ddof = 0, as the authors compute it.

A run's score and test numbers are those of the evaluation the criterion chooses, from its ``evaluations.npz``
(any registered criterion, even one written after the sweep) or else results.json's ``criteria`` (older sweeps).
Formatting lives in ``table_format``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, MemawareError
from ..evallog import FILENAME as EVAL_LOG
from ..evallog import EvalLog
from ..methods import method_class
from ..metrics import report_from_counts
from ..selection import get_criterion, select
from .hparams import uses_train_groups
from .table_runs import RunRecord, Runs, criteria_of

PROTOCOLS = ("per-seed", "first-seed")


def method_label(method: str) -> str:
    """A method's row label, from its own declaration (``Method.label()``); the name itself if it no longer
    resolves (an old sweep of a method that is gone)."""
    try:
        return method_class(method).label()
    except ConfigError:
        return method


def criterion_key(name: str) -> str:
    """'va_wga' / 'val_wga' / 'worst_class' / 'pkg.mod:Class' ... -> the registered criterion's name (also its key
    in results.json's ``criteria``); ``ConfigError`` otherwise."""
    return get_criterion(name).name


@dataclass
class Cell:
    """One (dataset, method): test accuracies (fractions) of the chosen run of each seed."""

    choices: list[dict] = field(default_factory=list)  # {"seed", "comb", "val_score", "avg", "worst", "dir"}
    expected_seeds: int = 0

    def stat(self, key: str) -> tuple[float, float] | None:
        vals = [c[key] for c in self.choices if c[key] is not None]
        if not vals:
            return None
        mean = sum(vals) / len(vals)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))

    @property
    def n_seeds(self) -> int:
        return len(self.choices)

    @property
    def partial(self) -> bool:
        return 0 < self.n_seeds < self.expected_seeds


@dataclass
class Table:
    criterion: str
    protocol: str
    datasets: list[str]
    methods: list[str]
    train_groups: dict[str, str]  # method -> yes / no / inferred
    val_groups: str  # yes / inferred / no (a property of the criterion)
    cells: dict[tuple[str, str], Cell]
    missing: list[RunRecord]
    notes: list[str]
    n_runs: int = 0  # runs found or planned for the table's methods and datasets
    criterion_text: str = ""  # the criterion's one-line description (the table's header)


def _external_groups(rec: RunRecord) -> np.ndarray | None:
    """(n_val,) the XRM-inferred validation groups the run's spec points to (``inferred_groups``: an .npz with
    ``val_groups``; a relative path is tried from the run directory too), or None when it names none."""
    name = (rec.spec or {}).get("inferred_groups")
    if not name:
        return None
    path = Path(str(name))
    if not path.is_absolute() and not path.is_file():
        path = rec.dir / path
    try:
        with np.load(path, allow_pickle=False) as f:
            groups = f["val_groups"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: no readable 'val_groups' ({type(e).__name__})") from None
    return np.asarray(groups).astype(np.int64)


def _from_log(rec: RunRecord, criterion: str) -> dict | None:
    """The evaluation ``criterion`` chooses in the run's evaluation log, with its test report."""
    crit = get_criterion(criterion)
    log = rec.log if rec.log is not None else EvalLog.load(rec.dir / EVAL_LOG)
    external = None
    if crit.val_group_use == "inferred":  # as in training: the method's own groups where it has them, else these
        try:
            external = _external_groups(rec)
        except DataError:
            if not log.has_inferred:
                raise
    t = select(log, crit, external)
    if t is None:
        return None
    test = report_from_counts(**log.test_counts_at(t))
    return {"epoch": log.epoch_at(t), "val_score": crit.score(log, t, external), "test": test}


def _from_results(rec: RunRecord, criterion: str) -> dict | None:
    """What the run recorded for ``criterion`` in results.json (runs without an evaluation log)."""
    sel = criteria_of(rec.results or {}).get(criterion)
    if not isinstance(sel, dict) or sel.get("val_score") is None:
        return None
    return {"epoch": sel.get("epoch"), "val_score": sel["val_score"], "test": sel.get("test") or {}}


def run_choice(rec: RunRecord, criterion: str, notes: list[str] | None = None) -> dict | None:
    """{"epoch", "val_score", "test"} of the evaluation ``criterion`` chooses in a finished run: from its
    ``evaluations.npz`` when it has one (any registered criterion), else from results.json (old sweeps: only the
    criteria computed during training). None when the criterion is not computable for the run. A log that cannot
    be read falls back to results.json, with a line in ``notes``."""
    if criterion not in rec.chosen:
        result = None
        if (rec.dir / EVAL_LOG).is_file():
            try:
                result = _from_log(rec, criterion)
            except MemawareError as e:
                if notes is not None:
                    notes.append(f"{rec.dataset}/{rec.method} comb{rec.comb}_seed{rec.seed}: {e}; using results.json")
                result = _from_results(rec, criterion)
        else:
            result = _from_results(rec, criterion)
        rec.chosen[criterion] = result
    return rec.chosen[criterion]


def _finite_or_none(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _choice(rec: RunRecord, criterion: str) -> dict:
    sel = run_choice(rec, criterion) or {}
    test = sel.get("test") or {}
    return {
        "seed": rec.seed,
        "comb": rec.comb,
        "val_score": float(sel["val_score"]),
        "epoch": sel.get("epoch"),
        "avg": _finite_or_none(test.get("avg_acc")),
        "worst": _finite_or_none(test.get("worst_group_acc")),
        "dir": str(rec.dir),
    }


def _declared_train_groups(method: str) -> str:
    """'yes' / 'no' / 'inferred' (groups the method infers itself, XRM+GroupDRO's) from the method's own
    declaration, '?' for a method this memaware does not know."""
    try:
        if uses_train_groups(method):
            return "yes"
        return "inferred" if getattr(method_class(method), "infers_train_groups", False) else "no"
    except MemawareError:
        return "?"


def method_val_groups(method: str, criterion_groups: str) -> str:
    """The e_va mark of a method's row: 'yes' for a method that trains on the true validation groups (DFR:
    ``needs_val_groups``) whatever the criterion, else the criterion's own use (``Table.val_groups``)."""
    try:
        return "yes" if getattr(method_class(method), "needs_val_groups", False) else criterion_groups
    except ConfigError:
        return criterion_groups


def build_table(runs: Runs, selection: str = "va_wga", protocol: str = "per-seed") -> Table:
    """Chooses one run per (dataset, method, seed) by the validation criterion and collects its test numbers."""
    criterion = criterion_key(selection)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got '{protocol}'")
    notes: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    train_groups: dict[str, str] = {}
    for method in runs.methods:
        uses = [r.results.get("uses_train_groups") for r in runs.records if r.method == method and r.results]
        known = [u for u in uses if isinstance(u, bool)]
        if _declared_train_groups(method) == "inferred":  # results.json's bool says only "no true groups"
            train_groups[method] = "inferred"
        elif known:
            train_groups[method] = "yes" if any(known) else "no"
        else:
            train_groups[method] = _declared_train_groups(method)
    for ds in runs.datasets:
        planned = runs.seeds.get(ds, [])
        for method in runs.methods:
            recs = [r for r in runs.records if r.dataset == ds and r.method == method and r.state == "done"]
            cell = Cell(expected_seeds=len(planned))
            cells[(ds, method)] = cell
            scored = [(r, run_choice(r, criterion, notes)) for r in recs]
            eligible = [(r, float(c["val_score"])) for r, c in scored if c is not None]
            if recs and not eligible:
                notes.append(f"{ds}/{method}: no run has the criterion {criterion} (not computable for it)")
                continue
            by_seed: dict[int, list[tuple[RunRecord, float]]] = {}
            for r, s in eligible:
                by_seed.setdefault(r.seed, []).append((r, s))
            if protocol == "per-seed":
                for seed in sorted(by_seed):
                    best = max(by_seed[seed], key=lambda rs: (rs[1], -rs[0].comb))[0]
                    cell.choices.append(_choice(best, criterion))
            elif by_seed:
                first = min(by_seed)
                comb = max(by_seed[first], key=lambda rs: (rs[1], -rs[0].comb))[0].comb
                for seed in sorted(by_seed):
                    match = [r for r, _ in by_seed[seed] if r.comb == comb]
                    if match:
                        cell.choices.append(_choice(match[0], criterion))
                    else:
                        notes.append(f"{ds}/{method}: combination {comb} has no result for seed {seed}")
            if cell.choices and any(c["worst"] is None for c in cell.choices):
                notes.append(f"{ds}/{method}: some test splits have no known attribute (no worst-group accuracy)")
    missing = [r for r in runs.missing if r.dataset in runs.datasets]
    notes += [f"{r.dataset}/{r.method} comb{r.comb}_seed{r.seed}: {r.state}; left out of every mean"
              for r in missing if r.state.startswith("damaged")]  # fmt: skip
    crit = get_criterion(criterion)
    if crit.oracle:
        notes.append(f"{criterion} is an oracle (it chooses by the test split): for diagnostics, not for reporting")
    n_runs = sum(1 for r in runs.records if r.method in runs.methods)
    return Table(
        criterion,
        protocol,
        runs.datasets,
        runs.methods,
        train_groups,
        crit.val_group_use,
        cells,
        missing,
        list(dict.fromkeys(notes)),
        n_runs,
        crit.description,
    )


