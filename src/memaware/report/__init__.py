"""The claim-by-claim report of a reproduction (``memaware report``, and the last step of ``memaware reproduce``):
reads the stages' JSON files from a results folder, checks every claim (``claims``) and writes REPORT.md and a
self-contained report.html (``render``). Nothing is retrained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..artifacts import atomic_writer
from ..errors import DataError
from .claims import CHECKS, FAILS, HOLDS, NOT_COMPARABLE, THRESHOLDS, Claim, check_claims
from .notes import section_notes
from .premise import group_headings
from .render import render_html, render_markdown, tally

STAGE_FILES = {stage: f"{stage}.json" for stage, _ in CHECKS}


def load_results(results: str | Path) -> dict[str, dict | None]:
    """{stage: its JSON object, or None when the file is absent}; a file that is not JSON is a ``DataError``."""
    results = Path(results)
    out: dict[str, dict | None] = {}
    for stage, name in STAGE_FILES.items():
        path = results / name
        if not path.is_file():
            out[stage] = None
            continue
        try:
            out[stage] = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a JSON file ({e})") from None
    return out


def write_report(results: str | Path, header: str = "") -> dict[str, Any]:
    """Checks every claim against ``results``' JSON files, writes REPORT.md and report.html there; returns
    {"claims": [Claim], "tally": str, "markdown": path, "html": path}."""
    results = Path(results)
    loaded = load_results(results)
    if all(v is None for v in loaded.values()):
        raise DataError(f"--results {results}: no {', '.join(STAGE_FILES.values())} in it (run memaware reproduce)")
    claims, notes, headings = check_claims(loaded), section_notes(loaded), group_headings(loaded.get("table1"))
    md, page = results / "REPORT.md", results / "report.html"
    text = render_markdown(claims, header, notes, headings)
    page_text = render_html(claims, results, header, notes, headings)
    atomic_writer(md, lambda p: p.write_text(text), ".md")
    atomic_writer(page, lambda p: p.write_text(page_text), ".html")
    return {"claims": claims, "tally": tally(claims), "markdown": md, "html": page}


__all__ = ["FAILS", "HOLDS", "NOT_COMPARABLE", "STAGE_FILES", "THRESHOLDS", "Claim", "check_claims", "load_results",
           "write_report"]
