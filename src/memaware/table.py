"""Paper Table 1 from sweep directories: per dataset, test average and worst-group accuracy of each method, mean +-
std over seeds, where each seed's run is the hyper-parameter combination that a validation criterion prefers.

Runs are found by their ``spec.json`` / ``results.json`` anywhere under each sweep directory (the dataset is read
from the spec: ``dataset``, or the stem of the ``data`` file), so several sweep directories, or several datasets in
one, make one table. ``sweep.json`` manifests say which runs were planned: those without results are reported as
missing, and the table shows what exists (a cell over fewer seeds than planned is marked).

Protocols: ``per-seed`` (default): for every seed, the combination with the best validation score of the criterion
(ties: the lower combination index); ``first-seed``: the combination best on the first seed, reported over all
seeds (the authors' read_results). The std is over seeds with ddof = 0, as the authors compute it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .hparams import METHOD_INFO, val_group_use

# Accepted spellings of a criterion -> its key in results.json["selection"].
CRITERIA = {
    "va_wga": "val_wga",
    "val_wga": "val_wga",
    "va_gi_wga": "val_gi_wga",
    "val_gi_wga": "val_gi_wga",
    "worst_class": "val_worst_class",
    "va_worst_class": "val_worst_class",
    "val_worst_class": "val_worst_class",
    "avg": "val_avg",
    "va_avg": "val_avg",
    "va_avg_acc": "val_avg",
    "val_avg": "val_avg",
}
CRITERION_TEXT = {
    "val_wga": "validation worst-group accuracy (true groups)",
    "val_gi_wga": "validation worst-group accuracy (XRM-inferred groups)",
    "val_worst_class": "validation worst-class accuracy (no group labels)",
    "val_avg": "validation average accuracy (no group labels)",
}
PROTOCOLS = ("per-seed", "first-seed")
METHOD_NAMES = {
    "erm": "ERM",
    "groupdro": "GroupDRO",
    "subg": "SUBG",
    "rwg": "RWG",
    "jtt": "JTT",
    "xrm": "XRM",
    "mat": "MAT",
}
DATASET_ORDER = ("waterbirds", "celeba", "multinli", "civilcomments")
MARKS = {
    "md": {"yes": "✓", "no": "✗", "inferred": "~"},
    "latex": {"yes": r"\checkmark", "no": r"$\times$", "inferred": r"$\sim$"},
    "csv": {"yes": "yes", "no": "no", "inferred": "inferred"},
}


def criterion_key(name: str) -> str:
    """'va_wga' / 'val_wga' / 'worst_class' / ... -> the results.json key; ``ConfigError`` otherwise."""
    key = CRITERIA.get(name.strip().lower())
    if key is None:
        raise ConfigError(f"unknown selection criterion '{name}', choose from {', '.join(CRITERIA)}")
    return key


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
            if (d / "results.json").is_file():
                state = "done" if isinstance(results, dict) and criteria_of(results) else "unreadable"
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
            )
            records[key] = rec
            found_methods.append(rec.method)
            seeds.setdefault(rec.dataset, set()).add(rec.seed)
    recs = list(records.values())
    groups_only = {r.method for r in recs if r.role == "groups"} - set(listed)
    methods = listed + [m for m in found_methods if m not in listed and not (has_manifest and m in groups_only)]
    methods = _ordered(methods, tuple(METHOD_NAMES))
    datasets = _ordered((r.dataset for r in recs), DATASET_ORDER)
    return Runs(recs, methods, datasets, {k: sorted(v) for k, v in seeds.items()})


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
    train_groups: dict[str, str]  # method -> yes / no
    val_groups: str  # yes / inferred / no (a property of the criterion)
    cells: dict[tuple[str, str], Cell]
    missing: list[RunRecord]
    notes: list[str]
    n_runs: int = 0  # runs found or planned for the table's methods and datasets


def criteria_of(results: dict) -> dict:
    """{criterion: {"epoch", "val_score", "val", "test"}} of a results.json (key ``criteria``, or ``selection``
    when that is a dict)."""
    for key in ("criteria", "selection"):
        value = results.get(key)
        if isinstance(value, dict):
            return value
    return {}


def _score(rec: RunRecord, criterion: str) -> float | None:
    sel = criteria_of(rec.results or {}).get(criterion)
    if not isinstance(sel, dict) or sel.get("val_score") is None:
        return None
    return float(sel["val_score"])


def _choice(rec: RunRecord, criterion: str) -> dict:
    sel = criteria_of(rec.results or {})[criterion]
    test = sel.get("test") or {}
    return {
        "seed": rec.seed,
        "comb": rec.comb,
        "val_score": float(sel["val_score"]),
        "epoch": sel.get("epoch"),
        "avg": test.get("avg_acc"),
        "worst": test.get("worst_group_acc"),
        "dir": str(rec.dir),
    }


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
        if known:
            train_groups[method] = "yes" if any(known) else "no"
        elif method in METHOD_INFO:
            train_groups[method] = "yes" if METHOD_INFO[method].train_groups else "no"
        else:
            train_groups[method] = "?"
    for ds in runs.datasets:
        planned = runs.seeds.get(ds, [])
        for method in runs.methods:
            recs = [r for r in runs.records if r.dataset == ds and r.method == method and r.state == "done"]
            cell = Cell(expected_seeds=len(planned))
            cells[(ds, method)] = cell
            scored = [(r, _score(r, criterion)) for r in recs]
            eligible = [(r, s) for r, s in scored if s is not None]
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
    n_runs = sum(1 for r in runs.records if r.method in runs.methods)
    return Table(
        criterion,
        protocol,
        runs.datasets,
        runs.methods,
        train_groups,
        val_group_use(criterion),
        cells,
        missing,
        notes,
        n_runs,
    )


def _pct(stat: tuple[float, float] | None, n: int, pm: str) -> str:
    if stat is None:
        return "-"
    mean, std = stat
    return f"{100 * mean:.1f}" if n < 2 else f"{100 * mean:.1f} {pm} {100 * std:.1f}"


def _header_note(t: Table, pm: str = "±") -> str:
    return (
        f"Test accuracy (%), mean {pm} std over seeds; model selection: {CRITERION_TEXT[t.criterion]}, "
        f"{'per seed, the best' if t.protocol == 'per-seed' else 'the best on the first seed'} of the "
        "hyper-parameter combinations."
    )


def format_table(t: Table, fmt: str = "md") -> str:
    """The table as Markdown ('md'), 'csv', 'latex' or 'json'."""
    if fmt == "json":
        return json.dumps(table_json(t), indent=2) + "\n"
    if fmt == "csv":
        return _csv(t)
    if fmt not in ("md", "latex"):
        raise ConfigError(f"format must be md, csv, latex or json, got '{fmt}'")
    marks = MARKS[fmt]
    pm = "±" if fmt == "md" else r"$\pm$"
    rows = []
    for m in t.methods:
        row = [marks.get(t.train_groups[m], "?"), marks[t.val_groups], METHOD_NAMES.get(m, m)]
        for ds in t.datasets:
            cell = t.cells[(ds, m)]
            star = "*" if cell.partial else ""
            row += [_pct(cell.stat("avg"), cell.n_seeds, pm) + star, _pct(cell.stat("worst"), cell.n_seeds, pm) + star]
        rows.append(row)
    footnotes = [
        "e_tr: the method trains on the true training group labels; e_va: the validation labels model selection "
        f"reads ({marks['yes']} true groups, {marks['inferred']} XRM-inferred, {marks['no']} none).",
    ]
    partial = [
        f"{ds}/{m}: {t.cells[(ds, m)].n_seeds} of {t.cells[(ds, m)].expected_seeds} seeds"
        for ds in t.datasets
        for m in t.methods
        if t.cells[(ds, m)].partial
    ]
    if partial:
        footnotes.append("* fewer seeds than planned: " + "; ".join(partial) + ".")
    footnotes += t.notes
    if fmt == "md":
        head = ["e_tr", "e_va", "Method"] + [f"{ds} {k}" for ds in t.datasets for k in ("Avg", "Worst")]
        lines = [_header_note(t), "", "| " + " | ".join(head) + " |"]
        lines.append("|" + "|".join([":-:", ":-:", ":--"] + ["--:"] * (2 * len(t.datasets))) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += [""] + footnotes
        return "\n".join(lines) + "\n"
    cols = "cc l " + " ".join("rr" for _ in t.datasets)
    esc = _latex_escape
    lines = [
        f"% {_header_note(t, '+-')}",
        r"\begin{tabular}{" + cols + "}",
        r"\toprule",
        r" & & & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{esc(ds)}}}" for ds in t.datasets) + r" \\",
        r"$e^{tr}$ & $e^{va}$ & Method & " + " & ".join("Avg & Worst" for _ in t.datasets) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(c) if i == 2 else c for i, c in enumerate(r)) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"] + [f"% {f}" for f in footnotes]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def _csv(t: Table) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "dataset",
            "method",
            "train_groups",
            "val_groups",
            "criterion",
            "protocol",
            "avg_pct",
            "avg_std_pct",
            "worst_pct",
            "worst_std_pct",
            "n_seeds",
            "planned_seeds",
            "seed_comb",
        ]
    )
    for ds in t.datasets:
        for m in t.methods:
            cell = t.cells[(ds, m)]
            avg, worst = cell.stat("avg"), cell.stat("worst")
            w.writerow(
                [ds, m, t.train_groups[m], t.val_groups, t.criterion, t.protocol]
                + _two(avg)
                + _two(worst)
                + [cell.n_seeds, cell.expected_seeds, ";".join(f"{c['seed']}:{c['comb']}" for c in cell.choices)]
            )
    return buf.getvalue()


def _two(stat: tuple[float, float] | None) -> list[str]:
    return ["", ""] if stat is None else [f"{100 * stat[0]:.2f}", f"{100 * stat[1]:.2f}"]


def table_json(t: Table) -> dict:
    """Everything the table shows, plus the run chosen for each seed."""
    cells = []
    for (ds, m), cell in t.cells.items():
        avg, worst = cell.stat("avg"), cell.stat("worst")
        cells.append(
            {
                "dataset": ds,
                "method": m,
                "avg_mean": avg[0] if avg else None,
                "avg_std": avg[1] if avg else None,
                "worst_mean": worst[0] if worst else None,
                "worst_std": worst[1] if worst else None,
                "n_seeds": cell.n_seeds,
                "planned_seeds": cell.expected_seeds,
                "chosen": cell.choices,
            }
        )
    return {
        "criterion": t.criterion,
        "protocol": t.protocol,
        "datasets": t.datasets,
        "methods": t.methods,
        "train_groups": t.train_groups,
        "val_groups": t.val_groups,
        "cells": cells,
        "missing": [{"dir": str(r.dir), "state": r.state} for r in t.missing],
        "notes": t.notes,
    }


def missing_text(t: Table, limit: int = 10) -> str | None:
    """One line per missing run (at most ``limit``), or None when every planned run has results."""
    if not t.missing:
        return None
    lines = [f"table: {len(t.missing)} of {t.n_runs} runs have no results; the table shows what exists:"]
    for r in t.missing[:limit]:
        lines.append(f"  {r.dataset}/{r.method} comb{r.comb}_seed{r.seed}: {r.state} ({r.dir})")
    if len(t.missing) > limit:
        lines.append(f"  ... and {len(t.missing) - limit} more")
    return "\n".join(lines)


def plot_table(t: Table, path: str | os.PathLike) -> Path:
    """Bar chart of test worst-group accuracy (mean, error bar = std over seeds), one group of bars per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .artifacts import save_figure

    n_m, n_d = max(1, len(t.methods)), max(1, len(t.datasets))
    width = 0.8 / n_m
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * n_d * max(1.0, n_m / 3) + 1.5), 3.6))
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(t.methods):
        xs, ys, es, labels = [], [], [], []
        for j, ds in enumerate(t.datasets):
            cell = t.cells[(ds, m)]
            stat = cell.stat("worst")
            if stat is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * stat[0])
            es.append(100 * stat[1] if cell.n_seeds > 1 else float("nan"))
            labels.append(f"{100 * stat[0]:.1f}" + ("*" if cell.partial else ""))
        bars = ax.bar(xs, ys, width * 0.92, color=cmap(i % 10), label=METHOD_NAMES.get(m, m))
        ax.errorbar(xs, ys, yerr=es, fmt="none", ecolor="black", capsize=3, lw=1)
        for b, text in zip(bars, labels, strict=True):
            ax.text(
                b.get_x() + b.get_width() / 2,
                1.5,
                text,
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                color="white",
            )
    ax.set_xlim(-0.5, n_d - 0.5)
    ax.set_xticks(range(len(t.datasets)))
    ax.set_xticklabels(t.datasets)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test worst-group accuracy (%)")
    partial = any(c.partial for c in t.cells.values())
    title = f"selection: {t.criterion} ({t.protocol}); error bars: std over seeds"
    ax.set_title(title + ("\n* fewer seeds than planned" if partial else ""), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(t.methods), 4), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
