"""Whether a Table-1 analogue is in the regime the paper is about, from the premise audit in table1.json
(``experiments.premise``): ERM fits its training minority *and* memorizes it. The report prints one regime line
above each analogue's claims, and where the premise does not hold the claims' "why" says so. Thresholds:
``claims.THRESHOLDS`` (``premise_fits_minority``, and Fig. 2's ``fig2_min_gap`` for "memorizes")."""

from __future__ import annotations

from typing import Any

from .claims import THRESHOLDS

# what the paper predicts where its premise does not hold (Sec. 2, Case 1: spurious features, no memorization)
CASE_1 = ("the paper's Case 1 (no memorization): its argument predicts that ERM is not misled by memorization "
          "here, so MAT, which corrects for memorization, has nothing to correct")  # fmt: skip


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def regime(info: dict[str, Any]) -> tuple[bool | None, str, str]:
    """(in the regime: True / False / None when not measured, the regime line, the cause for a claim's "why"
    (empty when in the regime)) of one analogue's table1.json entry."""
    p = info.get("premise")
    acc = ((p or {}).get("erm_train_accuracy") or {}).get("minority")
    ge, gm = (p or {}).get("erm_gap"), (p or {}).get("mat_gap")
    if p is None or acc is None or ge is None:
        return None, "memorization regime: not measured (no premise audit in table1.json)", ""
    need_fit, need_gap = THRESHOLDS["premise_fits_minority"], THRESHOLDS["fig2_min_gap"]
    fits, memorizes = acc >= need_fit, ge >= need_gap
    mat = "" if gm is None else f", {gm:+.3f} under MAT"
    line = (f"memorization regime: **{'yes' if fits and memorizes else 'no'}** — ERM fits {_pct(acc)} of its "
            f"training minority (needs >= {_pct(need_fit)}); minority - majority memorization gap {ge:+.3f} "
            f"(needs >= {need_gap:g}){mat}; {p.get('estimator', '?')} estimator on the analogue's linear head, "
            f"{p.get('seconds', 0):.0f} s")  # fmt: skip
    if fits and memorizes:
        return True, line, ""
    if not fits:
        cause = f"premise not met: ERM fits only {_pct(acc)} of its training minority"
    else:
        cause = f"premise not met: ERM fits its minority without memorizing it (gap {ge:+.3f})"
    return False, line, f"{cause}: {CASE_1}"


def group_headings(table1: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """{analogue: (heading, regime line)} for every analogue of table1.json: what the report prints above the
    analogue's claims."""
    smoke = ((table1 or {}).get("size") or {}).get("name") == "smoke"
    out = {}
    for name, info in ((table1 or {}).get("analogues") or {}).items():
        paper = info.get("paper_dataset", "?")
        title = "`setup21`: the paper's Setup 2.1" if paper == "Setup 2.1" else f"`{name}`: {paper} analogue"
        line = regime(info)[1]
        out[name] = (title, f"{line} (smoke size: measured on a few per cent of the data)" if smoke else line)
    return out


__all__ = ["CASE_1", "group_headings", "regime"]
