"""Paper Table 1 as text (Markdown, CSV, LaTeX, JSON) from a ``table.Table``; the list of runs without results.
Formatting only: which run and which evaluation each cell reports is decided in ``table``; the bar chart is
``memaware.plots.table``."""

from __future__ import annotations

import json

from ..errors import ConfigError
from .table import Table, method_label, method_val_groups

MARKS = {
    "md": {"yes": "✓", "no": "✗", "inferred": "~"},
    "latex": {"yes": r"\checkmark", "no": r"$\times$", "inferred": r"$\sim$"},
    "csv": {"yes": "yes", "no": "no", "inferred": "inferred"},
}


def _pct(stat: tuple[float, float] | None, n: int, pm: str) -> str:
    if stat is None:
        return "-"
    mean, std = stat
    return f"{100 * mean:.1f}" if n < 2 else f"{100 * mean:.1f} {pm} {100 * std:.1f}"


def _header_note(t: Table, pm: str = "±") -> str:
    return (
        f"Test accuracy (%), mean {pm} std over seeds; model selection: {t.criterion_text or t.criterion}, "
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
        row = [marks.get(t.train_groups[m], "?"), marks[method_val_groups(m, t.val_groups)], method_label(m)]
        for ds in t.datasets:
            cell = t.cells[(ds, m)]
            star = "*" if cell.partial else ""
            row += [_pct(cell.stat("avg"), cell.n_seeds, pm) + star, _pct(cell.stat("worst"), cell.n_seeds, pm) + star]
        rows.append(row)
    footnotes = [
        "e_tr: the training group labels the method trains on; e_va: the validation labels model selection (and "
        f"DFR's last-layer retraining) reads ({marks['yes']} true groups, {marks['inferred']} inferred by the method "
        f"or an XRM run, {marks['no']} none).",
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
                [ds, m, t.train_groups[m], method_val_groups(m, t.val_groups), t.criterion, t.protocol]
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
    lines = [f"table: {len(t.missing)} of {t.n_runs} runs have no results (or damaged ones, left out of every "
             "mean); the table shows what exists:"]
    for r in t.missing[:limit]:
        lines.append(f"  {r.dataset}/{r.method} comb{r.comb}_seed{r.seed}: {r.state} ({r.dir})")
    if len(t.missing) > limit:
        lines.append(f"  ... and {len(t.missing) - limit} more")
    return "\n".join(lines)
