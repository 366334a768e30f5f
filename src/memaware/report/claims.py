"""The paper's claims, each checked against the JSON files a reproduction wrote.

Every threshold a verdict uses is in ``THRESHOLDS`` (and nowhere else), documented in docs/report.md. A claim's
verdict is ``HOLDS``, ``FAILS`` or ``NOT_COMPARABLE``; a failing claim is reported as failing. Each check is a pure
function of the loaded JSON objects (``results``: {"fig1": ..., "theorem": ..., "fig3": ..., "table1": ...,
"fig2": ...}, any of them missing), so it can be tested on hand-made results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOLDS, FAILS, NOT_COMPARABLE = "holds", "does not hold", "not comparable"
SMOKE = "smoke"  # the pipeline-check size of reproduce: its numbers are never judged

THRESHOLDS: dict[str, float] = {
    # Fig. 1: a test accuracy counts as "generalizes" at or above this, as "fails" at or below the next
    "fig1_generalizes": 0.80,
    "fig1_fails": 0.50,
    "fig1_memorized": 0.99,  # training minority accuracy that counts as fitted
    "theorem_agreement": 0.90,  # observed regime = predicted regime in at least this fraction of clear-cut cells
    # Table 1, test worst-group accuracy in points (%): MAT must beat ERM by this much ...
    "table1_mat_over_erm": 5.0,
    # ... stay within this of GroupDRO (which trains on group labels) ...
    "table1_mat_near_groupdro": 5.0,
    # ... and, with no group label anywhere, within this of the best label-free row
    "table1_mat_near_best_label_free": 5.0,
    "fig2_min_gap": 0.05,  # ERM's minority-minus-majority mean score gap (score units) that counts as "more"
    # Table 1's premise (report.premise): ERM "fits" its training minority at this training accuracy or above, and
    # "memorizes" it when the gap is at least fig2_min_gap
    "premise_fits_minority": 0.90,
    "fig2_min_reduction": 0.25,  # fraction of ERM's gap that MAT must remove
}

# the label-free rows of Table 1: methods that train on no group label (XRM+GroupDRO trains on inferred ones)
LABEL_FREE = ("erm", "jtt", "lc", "ula", "xrm-groupdro", "mat")


@dataclass
class Claim:
    """One checked claim: ``paper`` is the paper's statement and number (None where it gives none); ``ours`` what
    the run measured; ``reason`` why the verdict is what it is."""

    key: str
    section: str
    statement: str
    paper: str
    ours: str
    verdict: str
    reason: str
    command: str
    figure: str | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    group: str | None = None  # claims shown together under one heading (Table 1: the analogue)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _command(stage: str, seed: int | None, size: str | None = None) -> str:
    sized = f" --size {size}" if size and size != "quick" else ""
    return f"memaware reproduce --only {stage} --seed {0 if seed is None else seed}{sized} --out results"


def _missing(key: str, section: str, statement: str, paper: str, stage: str, figure: str | None) -> Claim:
    return Claim(key, section, statement, paper, "not run", NOT_COMPARABLE,
                 f"no {stage}.json in the results folder: the stage did not run", _command(stage, None), figure)


def fig1_claims(fig1: dict | None) -> list[Claim]:
    """Fig. 1's three regimes on Setup 2.1 (test minority accuracy of ERM without noise, ERM and MAT with noise)."""
    section, fig = "Fig. 1", "fig1.png"
    specs = [
        ("fig1.noiseless", "Without input noise (nothing to memorize), ERM ends up using the core feature and "
         "generalizes to the test minority.", "qualitative (Fig. 1 left): perfect generalization on both groups"),
        ("fig1.noisy_erm", "With input noise, ERM fits its training minority through the noise and fails on the "
         "test minority.", "qualitative (Fig. 1 middle): zero training loss, no generalization on held-out minority"),
        ("fig1.mat", "With input noise, MAT learns the core feature and generalizes to the test minority.",
         "qualitative (Fig. 1 right): generalizes well even in the presence of noise"),
    ]  # fmt: skip
    if fig1 is None:
        return [_missing(k, section, s, p, "fig1", fig) for k, s, p in specs]
    t = THRESHOLDS
    runs, seed = fig1.get("runs", {}), fig1.get("seed")
    out = []
    for (key, statement, paper), run in zip(specs, ("erm_noiseless", "erm_noisy", "mat_noisy"), strict=True):
        final = runs.get(run, {}).get("final")
        if final is None:
            out.append(Claim(key, section, statement, paper, "not run", NOT_COMPARABLE,
                             f"fig1.json has no run '{run}'", _command("fig1", seed), fig))
            continue
        test_min, train_min = final["test"]["minority"], final["train"]["minority"]
        ours = f"test minority {_pct(test_min)}, train minority {_pct(train_min)} ({run})"
        if key == "fig1.noisy_erm":
            ok = train_min >= t["fig1_memorized"] and test_min <= t["fig1_fails"]
            reason = (f"needs train minority >= {_pct(t['fig1_memorized'])} and test minority <= "
                      f"{_pct(t['fig1_fails'])}")
        else:
            ok = test_min >= t["fig1_generalizes"]
            reason = f"needs test minority >= {_pct(t['fig1_generalizes'])}"
        out.append(Claim(key, section, statement, paper, ours, HOLDS if ok else FAILS, reason,
                         _command("fig1", seed), fig, {"test_minority": test_min, "train_minority": train_min}))
    return out


def theorem_claims(theorem: dict | None) -> list[Claim]:
    """Theorem 2.2: the regime the fixed point predicts is the one exact ERM shows."""
    key, section, fig = "theorem.agreement", "Theorem 2.2", "phase.png"
    statement = ("Memorization flips ERM to the spurious attribute where the theorem says: the predicted regime "
                 "(attribute vs label) matches the observed one over a grid of noise levels and dimensions.")
    paper = "theorem (no number): ERM follows a once sigma^2 d is large enough relative to the spurious margin"
    if theorem is None:
        return [_missing(key, section, statement, paper, "theorem", fig)]
    agree = theorem.get("agreement")
    seed = theorem.get("config", {}).get("seed")
    if agree is None:
        return [Claim(key, section, statement, paper, "no clear-cut cell", NOT_COMPARABLE,
                      "no cell was both clear-cut and solved by the fixed point", _command("theorem", seed), fig)]
    need = THRESHOLDS["theorem_agreement"]
    return [Claim(key, section, statement, paper, f"agreement {_pct(agree)} of clear-cut cells",
                  HOLDS if agree >= need else FAILS, f"needs agreement >= {_pct(need)}", _command("theorem", seed),
                  fig, {"agreement": agree})]


def fig3_claims(fig3: dict | None) -> list[Claim]:
    """Fig. 3: good memorization (sigma = 1e-4) generalizes better than bad (1e-3) and ugly (0)."""
    section, fig = "Fig. 3", "fig3.png"
    specs = [("fig3.good_lt_bad", "bad"), ("fig3.good_lt_ugly", "ugly")]
    paper = "qualitative (Fig. 3): good memorization keeps f, bad and ugly do not"
    if fig3 is None:
        return [_missing(k, section, f"Test MSE of good < {o}.", paper, "fig3", fig) for k, o in specs]
    runs, seed = fig3.get("runs", {}), fig3.get("seed")
    out = []
    for key, other in specs:
        statement = f"Good memorization (sigma = 1e-4) has a lower test MSE than {other} memorization."
        if "good" not in runs or other not in runs:
            out.append(Claim(key, section, statement, paper, "not run", NOT_COMPARABLE,
                             f"fig3.json lacks 'good' or '{other}'", _command("fig3", seed), fig))
            continue
        g, o = runs["good"]["test_mse"], runs[other]["test_mse"]
        reached = runs["good"].get("reached_target", True) and runs[other].get("reached_target", True)
        ours = f"test MSE good {g:.4f} vs {other} {o:.4f}"
        if not reached:
            out.append(Claim(key, section, statement, paper, ours, NOT_COMPARABLE,
                             "a fit stopped before the training-MSE target the paper trains to", _command("fig3", seed),
                             fig))
            continue
        out.append(Claim(key, section, statement, paper, ours, HOLDS if g < o else FAILS,
                         f"needs MSE(good) < MSE({other})", _command("fig3", seed), fig, {"good": g, other: o}))
    return out


PAPER_TABLE1 = {  # test worst-group accuracy (%) of the paper's Table 1, validation groups known (None: TBD there)
    "Waterbirds": {"erm": 66.4, "groupdro": 86.5, "mat": 88.2},
    "CelebA": {"erm": 55.1, "groupdro": 88.3, "mat": 85.6},
    "MultiNLI": {"erm": 72.0, "groupdro": 73.4, "mat": None},
    "CivilComments": {"erm": 74.0, "groupdro": 73.8, "mat": None},
}
PAPER_LABEL_FREE = {  # the paper's rows with no group label anywhere (its MAT row there is TBD)
    "Waterbirds": "ERM 66.4 < uLA 86.1 < XRM+GroupDRO 88.1",
    "CelebA": "ERM 58.6 < uLA 86.5 < XRM+GroupDRO 89.1",
    "MultiNLI": "ERM 69.1 < XRM+GroupDRO 72.1",
    "CivilComments": "ERM 64.7 < XRM+GroupDRO 72.2",
}
# row labels as Table 1 prints them (kept here so that the report reads JSON without importing the methods)
LABELS = {"erm": "ERM", "groupdro": "GroupDRO", "mat": "MAT", "jtt": "JTT", "lc": "LC", "ula": "uLA",
          "xrm-groupdro": "XRM+GroupDRO"}


def worst(table: dict, dataset: str, method: str) -> float | None:
    """Mean test worst-group accuracy (%) of ``method`` on ``dataset`` in a table JSON (``table_json``)."""
    for cell in table.get("cells", []):
        if cell["dataset"] == dataset and cell["method"] == method and cell.get("worst_mean") is not None:
            return 100 * cell["worst_mean"]
    return None


def _paper_pair(paper_ds: str, other: str) -> str:
    row = PAPER_TABLE1.get(paper_ds)
    if row is None:
        return "not in the paper's Table 1"
    mat = "TBD in the paper" if row["mat"] is None else f"{row['mat']:.1f}"
    return f"{paper_ds}: MAT {mat}, {LABELS[other]} {row[other]:.1f} (worst group, %)"


def _table1_claim(key: str, statement: str, paper: str, ours_text: Callable[[], str], ok: Callable[[], bool],
                  needed: list[float | None], reason: str, run: tuple[Any, str | None], fig: str,
                  numbers: dict) -> Claim:
    """``run``: (seed, size name) of the table1 stage."""
    cmd = _command("table1", *run)
    if any(v is None for v in needed):
        return Claim(key, "Table 1", statement, paper, "missing rows", NOT_COMPARABLE,
                     "a row this claim compares has no finished run", cmd, fig, numbers)
    if run[1] == SMOKE:
        return Claim(key, "Table 1", statement, paper, ours_text(), NOT_COMPARABLE,
                     "smoke size: a few per cent of the data and a few epochs check the pipeline, not the claim", cmd,
                     fig, numbers)
    return Claim(key, "Table 1", statement, paper, ours_text(), HOLDS if ok() else FAILS, reason, cmd, fig, numbers)


def table1_claims(table1: dict | None) -> list[Claim]:
    """Per analogue: MAT >= ERM + margin; MAT within a margin of GroupDRO; with no group label, MAT within a margin
    of the best label-free row and above ERM."""
    t = THRESHOLDS
    if table1 is None:
        return [_missing("table1", "Table 1", "MAT without group labels improves on ERM's worst group and comes "
                         "near GroupDRO's, which trains on group labels.", "Waterbirds 88.2 vs ERM 66.4",
                         "table1", "table1_val_wga.png")]
    run = (table1.get("seed"), table1.get("size", {}).get("name"))
    margin = t["table1_mat_near_best_label_free"]
    val, free = table1["tables"].get("val_wga", {}), table1["tables"].get("val_gi_wga", {})
    from .premise import regime

    out = []
    for name, info in table1.get("analogues", {}).items():
        first = len(out)
        paper_ds = info.get("paper_dataset", name)
        label = f"{name} ({paper_ds} analogue)" if paper_ds != "Setup 2.1" else "Setup 2.1 (the paper's protocol)"
        e, d, m = worst(val, name, "erm"), worst(val, name, "groupdro"), worst(val, name, "mat")
        out.append(_table1_claim(
            f"table1.{name}.mat_over_erm", f"{label}: MAT's test worst-group accuracy beats ERM's by at least "
            f"{t['table1_mat_over_erm']:.0f} points (validation groups known).", _paper_pair(paper_ds, "erm"),
            lambda e=e, m=m: f"MAT {m:.1f} vs ERM {e:.1f} ({m - e:+.1f})",
            lambda e=e, m=m: m >= e + t["table1_mat_over_erm"], [e, m],
            f"needs MAT >= ERM + {t['table1_mat_over_erm']:.0f}", run, "table1_val_wga.png", {"mat": m, "erm": e}))
        out.append(_table1_claim(
            f"table1.{name}.mat_near_groupdro", f"{label}: MAT, trained without group labels, is within "
            f"{t['table1_mat_near_groupdro']:.0f} points of GroupDRO, trained with them.",
            _paper_pair(paper_ds, "groupdro"), lambda d=d, m=m: f"MAT {m:.1f} vs GroupDRO {d:.1f} ({m - d:+.1f})",
            lambda d=d, m=m: m >= d - t["table1_mat_near_groupdro"], [d, m],
            f"needs MAT >= GroupDRO - {t['table1_mat_near_groupdro']:.0f}", run, "table1_val_wga.png",
            {"mat": m, "groupdro": d}))
        rows = {r: worst(free, name, r) for r in LABEL_FREE}
        known = {r: v for r, v in rows.items() if v is not None and r != "mat"}
        best = max(known, key=known.__getitem__) if known else None
        mf, ef = rows["mat"], rows["erm"]
        out.append(_table1_claim(
            f"table1.{name}.label_free", f"{label}: with no group label anywhere (XRM-inferred validation groups), "
            f"MAT beats ERM and is within {margin:.0f} points of the best label-free method.",
            f"{paper_ds}, no labels: {PAPER_LABEL_FREE[paper_ds]}; MAT TBD in the paper"
            if paper_ds in PAPER_LABEL_FREE else "not in the paper's Table 1",
            lambda mf=mf, ef=ef, best=best, known=known: (
                f"MAT {mf:.1f}, ERM {ef:.1f}, best other label-free {LABELS.get(best, best)} {known[best]:.1f}"),
            lambda mf=mf, ef=ef, best=best, known=known: mf > ef and mf >= known[best] - margin,
            [mf, ef, None if best is None else known[best]],
            f"needs MAT > ERM and MAT >= best - {margin:.0f}", run, "table1_val_gi_wga.png",
            {"mat": mf, "erm": ef, "best": best, "best_value": known.get(best) if best else None}))
        in_regime, _, cause = regime(info)
        for claim in out[first:]:
            claim.group = name
            claim.numbers["memorization_regime"] = in_regime
            if cause and claim.verdict != NOT_COMPARABLE:  # the cause of a failure, beside it
                claim.reason = f"{claim.reason}; {cause}"
    return out


def fig2_claims(fig2: dict | None) -> list[Claim]:
    """Per audited dataset: ERM memorizes its minority more than its majority; MAT shrinks that gap."""
    t = THRESHOLDS
    paper = ("qualitative (Fig. 2, Waterbirds): higher self-influence for minority groups under ERM, a more uniform "
             "distribution under MAT")
    if fig2 is None:
        return [_missing("fig2", "Fig. 2", "ERM memorizes its minority more than its majority; MAT evens it out.",
                         paper, "fig2", None)]
    seed, out = fig2.get("seed"), []
    for name, panel in fig2.get("panels", {}).items():
        change, fig = panel.get("gap_change"), f"fig2_{name}.png"
        cmd = _command("fig2", seed, fig2.get("size"))
        where = f"{panel.get('source', name)}, {panel.get('estimator')} estimator"
        s1 = f"{where}: under ERM the minority groups are memorized more than the majority groups."
        s2 = f"{where}: MAT shrinks ERM's minority-minus-majority memorization gap by at least " \
             f"{t['fig2_min_reduction']:.0%}."
        if not change:
            reason = "the audit has no ERM/MAT gap (no minority group or no attribute labels)"
            out += [Claim(f"fig2.{name}.{k}", "Fig. 2", s, paper, "no gap", NOT_COMPARABLE, reason, cmd, fig)
                    for k, s in (("erm_gap", s1), ("mat_shrinks", s2))]
            continue
        ge, gm = change["erm_gap"], change["mat_gap"]
        if fig2.get("size") == SMOKE:
            reason = "smoke size: a few per cent of the data and a few epochs check the pipeline, not the claim"
            out += [Claim(f"fig2.{name}.{k}", "Fig. 2", s, paper, f"gap {ge:+.3f} (ERM) -> {gm:+.3f} (MAT)",
                          NOT_COMPARABLE, reason, _command("fig2", seed, SMOKE), fig)
                    for k, s in (("erm_gap", s1), ("mat_shrinks", s2))]
            continue
        out.append(Claim(f"fig2.{name}.erm_gap", "Fig. 2", s1, paper, f"ERM gap {ge:+.3f}",
                         HOLDS if ge >= t["fig2_min_gap"] else FAILS, f"needs ERM gap >= {t['fig2_min_gap']}",
                         cmd, fig, {"erm_gap": ge}))
        if ge < t["fig2_min_gap"]:
            out.append(Claim(f"fig2.{name}.mat_shrinks", "Fig. 2", s2, paper, f"ERM gap {ge:+.3f}, MAT {gm:+.3f}",
                             NOT_COMPARABLE, "ERM shows no minority excess here, so there is no gap to shrink", cmd,
                             fig, {"erm_gap": ge, "mat_gap": gm}))
            continue
        red = 1 - gm / ge
        out.append(Claim(f"fig2.{name}.mat_shrinks", "Fig. 2", s2, paper,
                         f"gap {ge:+.3f} (ERM) -> {gm:+.3f} (MAT): {red:.0%} smaller",
                         HOLDS if red >= t["fig2_min_reduction"] else FAILS,
                         f"needs a reduction >= {t['fig2_min_reduction']:.0%}", cmd, fig,
                         {"erm_gap": ge, "mat_gap": gm, "reduction": red}))
    return out


CHECKS: tuple[tuple[str, Callable[[dict | None], list[Claim]]], ...] = (
    ("fig1", fig1_claims), ("theorem", theorem_claims), ("fig3", fig3_claims), ("table1", table1_claims),
    ("fig2", fig2_claims),
)  # fmt: skip


def check_claims(results: dict[str, dict | None]) -> list[Claim]:
    """Every claim, in the paper's order of ``CHECKS``, from the stages' JSON objects (missing ones: None)."""
    return [c for stage, check in CHECKS for c in check(results.get(stage))]


__all__ = ["CHECKS", "Claim", "FAILS", "HOLDS", "LABEL_FREE", "NOT_COMPARABLE", "PAPER_TABLE1", "THRESHOLDS",
           "check_claims", "fig1_claims", "fig2_claims", "fig3_claims", "table1_claims", "theorem_claims", "worst"]
