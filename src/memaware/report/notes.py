"""What each section of the report ran on, read from the stages' JSON files: the data behind the numbers (which
analogue stands for which of the paper's datasets, its features, e.g. TF-IDF where MiniLM is not installed), the
sweep's size and the time each part took. Pure functions of the loaded JSON objects, like ``claims``."""

from __future__ import annotations

from typing import Any


def table1_notes(table1: dict[str, Any] | None) -> list[str]:
    """One line per analogue of table1.json, after one line on the sweep's size."""
    if not table1:
        return []
    size = table1.get("size", {})
    out = [f"Size `{size.get('name', '?')}`: every method over {size.get('n_hparams', '?')} hyper-parameter "
           f"combinations x {size.get('seeds', '?')} seeds per analogue (Setup 2.1: "
           f"{'x'.join(str(v) for v in size.get('setup21', [])[:2]) or '?'}); each seed keeps the combination its "
           "selection criterion picks, and the table shows mean ± std over seeds."]  # fmt: skip
    for name, info in table1.get("analogues", {}).items():
        seconds = (info.get("data_seconds") or 0) + (info.get("sweep_seconds") or 0)
        paper = info.get("paper_dataset", "?")
        stands_for = "the paper's own setup" if paper == "Setup 2.1" else f"{paper} analogue"
        premise = info.get("premise") or {}
        audit = f"; premise audit {premise['seconds']:.0f} s" if premise.get("seconds") is not None else ""
        out.append(f"`{name}` ({stands_for}): {info.get('description', '')}; "
                   f"n = {info.get('n', '?')}, {info.get('dim', '?')} features; {info.get('runs', '?')} runs, "
                   f"{seconds:.0f} s (data {info.get('data_seconds') or 0:.0f} s){audit}.")  # fmt: skip
    return out


def fig2_notes(fig2: dict[str, Any] | None) -> list[str]:
    """One line per audit of fig2.json: data, estimator, training recipe, time."""
    if not fig2:
        return []
    out = []
    for name, panel in fig2.get("panels", {}).items():
        cfg = panel.get("config", {})
        recipe = ", ".join(f"{k} {v}" for k, v in cfg.items())
        models = f", {panel['num_models']} half-sample models" if panel.get("num_models") else ""
        reused = " (the Table-1 premise audit of the same data, reused)" if panel.get("reused") else ""
        out.append(f"`{name}`: {panel.get('source', '')}; {panel.get('estimator', '?')} estimator{models}; "
                   f"heads trained with {recipe}; {panel.get('seconds', 0):.0f} s{reused}.")  # fmt: skip
    return out


def section_notes(results: dict[str, dict | None]) -> dict[str, list[str]]:
    """{report section: lines saying what it ran on}, for the sections that have any."""
    notes = {"Table 1": table1_notes(results.get("table1")), "Fig. 2": fig2_notes(results.get("fig2"))}
    return {section: lines for section, lines in notes.items() if lines}


__all__ = ["fig2_notes", "section_notes", "table1_notes"]
