"""The premise line of each Table-1 analogue: in the memorization regime or not (from the premise audit's numbers
in table1.json), printed above the analogue's claims, and the cause written into a claim's "why" where the premise
does not hold; failing claims listed under the tally with their reasons."""

from __future__ import annotations

import json

from memaware.report import FAILS, HOLDS, THRESHOLDS, check_claims, write_report
from memaware.report.premise import CASE_1, group_headings, regime


def _cell(ds: str, method: str, worst: float) -> dict:
    return {"dataset": ds, "method": method, "avg_mean": worst, "worst_mean": worst, "n_seeds": 2}


def _premise(minority_acc: float, erm_gap: float, mat_gap: float = 0.1) -> dict:
    return {"estimator": "newton", "erm_train_accuracy": {"minority": minority_acc, "majority": 1.0},
            "erm_gap": erm_gap, "mat_gap": mat_gap, "seconds": 3.0}  # fmt: skip


def _table1() -> dict:
    cells = []
    for ds, (mat, erm, dro) in {"celeb": (0.85, 0.60, 0.88), "census": (0.70, 0.71, 0.78)}.items():
        cells += [_cell(ds, "mat", mat), _cell(ds, "erm", erm), _cell(ds, "groupdro", dro)]
    analogues = {"celeb": {"paper_dataset": "CelebA", "premise": _premise(1.0, 0.40, 0.10)},
                 "census": {"paper_dataset": "CelebA", "premise": _premise(0.42, 0.01, 0.0)}}  # fmt: skip
    return {"seed": 0, "size": {"name": "quick"}, "analogues": analogues,
            "tables": {"val_wga": {"cells": cells}, "val_gi_wga": {"cells": cells}}}  # fmt: skip


def test_regime_from_the_premise_numbers():
    yes, line, cause = regime({"premise": _premise(1.0, 0.40, 0.10)})
    assert yes is True and cause == ""
    assert "memorization regime: **yes**" in line and "100.0 % of its training minority" in line
    assert "gap +0.400" in line and "+0.100 under MAT" in line and "newton estimator" in line
    no, line, cause = regime({"premise": _premise(0.42, 0.01)})
    assert no is False and "**no**" in line and "fits only 42.0 %" in cause and CASE_1 in cause
    fits, _, cause = regime({"premise": _premise(0.99, 0.01)})
    assert fits is False and "without memorizing it (gap +0.010)" in cause
    gap = THRESHOLDS["fig2_min_gap"]
    assert regime({"premise": _premise(THRESHOLDS["premise_fits_minority"], gap)})[0] is True  # both at threshold
    assert regime({})[0] is None and "not measured" in regime({})[1]


def test_failing_claim_shows_its_cause_and_verdicts_are_kept():
    claims = {c.key: c for c in check_claims({"table1": _table1()})}
    ok, bad = claims["table1.celeb.mat_over_erm"], claims["table1.census.mat_over_erm"]
    assert ok.verdict == HOLDS and ok.group == "celeb" and "premise" not in ok.reason
    assert bad.verdict == FAILS and bad.group == "census"  # the verdict stays: only the why gains the cause
    assert bad.reason.startswith("needs MAT >= ERM + 5; premise not met: ERM fits only 42.0 %")
    assert bad.numbers["memorization_regime"] is False and ok.numbers["memorization_regime"] is True


def test_report_prints_a_regime_line_above_each_analogue(tmp_path):
    table1 = _table1()
    (tmp_path / "table1.json").write_text(json.dumps(table1))
    write_report(tmp_path)
    md = (tmp_path / "REPORT.md").read_text()
    celeb, census = md.index("### `celeb`: CelebA analogue"), md.index("### `census`: CelebA analogue")
    assert celeb < md.index("memorization regime: **yes**") < md.index("| celeb (CelebA analogue): MAT's") < census
    assert census < md.index("memorization regime: **no**") < md.index("| census (CelebA analogue): MAT's")
    failures = md.split("Not holding, and why:")[1].split("## ")[0]
    assert failures.count("\n- ") == 3 and "census (CelebA analogue)" in failures and "premise not met" in failures
    page = (tmp_path / "report.html").read_text()
    assert "<h3><code>celeb</code>: CelebA analogue</h3><p class='regime'>memorization regime: <strong>yes</strong>" \
        in page  # fmt: skip
    assert group_headings(table1)["census"][0] == "`census`: CelebA analogue"


def test_premise_audit_is_found_again_by_its_key(tmp_path):
    """Fig. 2 reuses a Table-1 premise audit only for the same data and the same training configuration."""
    from memaware.data.synthetic import make_setup21
    from memaware.experiments.memorization import audit_config
    from memaware.experiments.premise import ESTIMATOR, audit_key, find_audit, measure_premise, premise_recipe

    data = make_setup21(n_train=60, n_val=20, n_test=20, noise_dim=100, seed=0)
    root = tmp_path / "table1" / "premise"
    premise = measure_premise(data, "setup21", root / "setup21", "Setup 2.1, small", epochs=20)
    assert premise["erm_train_accuracy"]["minority"] == 1.0 and premise["erm_gap"] > 0
    recipe = premise_recipe("setup21", 20)
    bias = recipe.pop("bias")
    cfg = audit_config(ESTIMATOR, **recipe)
    assert find_audit(root, audit_key(data, ESTIMATOR, cfg, bias)) == root / "setup21"
    other = make_setup21(n_train=60, n_val=20, n_test=20, noise_dim=100, seed=1)
    assert find_audit(root, audit_key(other, ESTIMATOR, cfg, bias)) is None
    assert find_audit(root, audit_key(data, ESTIMATOR, audit_config(ESTIMATOR, **{**recipe, "epochs": 21}), bias)) \
        is None  # fmt: skip
