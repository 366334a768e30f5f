import csv
import io
import json
from pathlib import Path

import pytest
from sweep_fakes import LOGGED, class0_right, write_logged_run

from memaware.artifacts import write_json
from memaware.cli import main
from memaware.errors import ConfigError
from memaware.selection import Criterion, unregister_criterion
from memaware.sweep.table import build_table, criterion_key
from memaware.sweep.table_format import format_table
from memaware.sweep.table_runs import collect_runs

# (method, seed, comb) -> (val score of val_wga, test avg, test worst); scores of the other criteria are 1 - these
WATERBIRDS = {
    ("erm", 0, 0): (0.5, 0.90, 0.60),
    ("erm", 0, 1): (0.7, 0.85, 0.70),
    ("erm", 0, 2): (0.6, 0.80, 0.50),
    ("erm", 1, 0): (0.8, 0.88, 0.66),
    ("erm", 1, 1): (0.8, 0.95, 0.10),  # ties with comb 0: the lower index wins
    ("erm", 1, 2): (0.2, 0.50, 0.50),
    ("groupdro", 0, 0): (0.9, 0.91, 0.88),
    ("groupdro", 0, 1): (0.1, 0.99, 0.99),
}
CELEBA = {("erm", 0, 0): (0.3, 0.95, 0.40), ("erm", 0, 1): (0.4, 0.94, 0.45)}


def _report(avg: float, worst: float) -> dict:
    return {"avg_acc": avg, "worst_group_acc": worst, "worst_class_acc": worst, "groups": {}}


def _write_run(root: Path, dataset: str, key: tuple, nums: tuple, layout: str = "criteria") -> None:
    method, seed, comb = key
    val, avg, worst = nums
    spec = {"method": method, "dataset": dataset, "data_dir": "/data", "seed": seed, "comb": comb, "hparams": {}}
    crit = {
        "val_wga": {"epoch": 3, "val_score": val, "val": _report(val, val), "test": _report(avg, worst)},
        "val_avg": {"epoch": 4, "val_score": 1 - val, "val": _report(val, val), "test": _report(1 - avg, 1 - worst)},
    }
    res = {"spec": spec, "method": method, "uses_train_groups": method == "groupdro", "seconds": 1.0}
    if layout == "criteria":  # memaware.sweep.runner
        res.update(selection="val_wga", criteria=crit)
    else:  # the first draft: selection = {criterion: ...}
        res.update(selection=crit)
    d = root / method / f"comb{comb}_seed{seed}"
    write_json(d / "spec.json", spec)
    write_json(d / "results.json", res)


@pytest.fixture
def sweeps(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for key, nums in WATERBIRDS.items():
        _write_run(a, "waterbirds", key, nums)
    planned = [
        {"dir": f"{m}/comb{c}_seed{s}", "dataset": "waterbirds", "method": m, "comb": c, "seed": s}
        for m in ("erm", "groupdro")
        for s in (0, 1)
        for c in range(3 if m == "erm" else 2)
    ]
    write_json(a / "sweep.json", {"methods": ["erm", "groupdro"], "runs": planned})
    unfinished = a / "groupdro" / "comb1_seed1"
    write_json(unfinished / "spec.json", {"method": "groupdro", "dataset": "waterbirds", "seed": 1, "comb": 1})
    (unfinished / "checkpoint.pt").write_bytes(b"x")
    for key, nums in CELEBA.items():
        _write_run(b, "celeba", key, nums, layout="selection")
    return a, b


def test_numbers_equal_a_hand_computation(sweeps):
    runs = collect_runs(sweeps)
    assert runs.methods == ["erm", "groupdro"] and runs.datasets == ["waterbirds", "celeba"]
    t = build_table(runs, "va_wga")
    erm = t.cells[("waterbirds", "erm")]
    assert [(c["seed"], c["comb"]) for c in erm.choices] == [(0, 1), (1, 0)]
    assert erm.stat("avg") == pytest.approx((0.865, 0.015)) and erm.stat("worst") == pytest.approx((0.68, 0.02))
    dro = t.cells[("waterbirds", "groupdro")]
    assert dro.partial and dro.stat("worst") == pytest.approx((0.88, 0.0))
    assert t.cells[("celeba", "erm")].stat("worst") == pytest.approx((0.45, 0.0))
    assert t.cells[("celeba", "groupdro")].stat("worst") is None
    md = format_table(t, "md")
    assert "| ✗ | ✓ | ERM | 86.5 ± 1.5 | 68.0 ± 2.0 | 94.0 | 45.0 |" in md
    assert "| ✓ | ✓ | GroupDRO | 91.0* | 88.0* | - | - |" in md
    assert "waterbirds/groupdro: 1 of 2 seeds" in md
    assert format_table(build_table(runs, "val_wga"), "md") == md  # both spellings
    first = build_table(runs, "va_wga", protocol="first-seed").cells[("waterbirds", "erm")]
    assert first.stat("avg") == pytest.approx((0.90, 0.05)) and first.stat("worst") == pytest.approx((0.40, 0.30))
    avg = build_table(runs, "avg")  # picks by 1 - val: erm seed 0 -> comb 0, seed 1 -> comb 2
    assert [c["comb"] for c in avg.cells[("waterbirds", "erm")].choices] == [0, 2] and avg.val_groups == "no"
    gi = build_table(runs, "va_gi_wga")
    assert gi.val_groups == "inferred" and any("val_gi_wga" in n for n in gi.notes)
    missing = {(r.method, r.comb, r.seed): r.state for r in t.missing}
    assert missing == {("groupdro", 0, 1): "not started", ("groupdro", 1, 1): "unfinished"}
    with pytest.raises(ConfigError):
        criterion_key("best")


def test_formats(sweeps):
    t = build_table(collect_runs(sweeps), "avg")
    rows = list(csv.DictReader(io.StringIO(format_table(t, "csv"))))
    assert len(rows) == 4 and rows[0]["dataset"] == "waterbirds" and rows[0]["criterion"] == "val_avg"
    row = rows[0]  # test avg 1 - 0.90 (seed 0, comb 0) and 1 - 0.50 (seed 1, comb 2)
    assert (row["method"], row["avg_pct"], row["avg_std_pct"], row["seed_comb"]) == ("erm", "30.00", "20.00", "0:0;1:2")
    latex = format_table(t, "latex")
    assert r"\begin{tabular}" in latex and r"\checkmark & $\times$ & GroupDRO" in latex and "±" not in latex
    doc = json.loads(format_table(t, "json"))
    assert doc["criterion"] == "val_avg" and len(doc["cells"]) == 4
    assert any("val_worst_class" in n for n in build_table(collect_runs(sweeps), "worst_class").notes)


def test_cli_writes_table_and_chart_and_lists_missing_runs(sweeps, tmp_path, capsys):
    a, b = sweeps
    out = tmp_path / "t1.md"
    assert main(["table", "--sweep", str(a), str(b), "--selection", "va_wga", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "2 of 12 runs have no results (or damaged ones" in captured.err
    assert "groupdro comb1_seed1: unfinished" in captured.err
    assert "86.5 ± 1.5" in out.read_text()
    png = tmp_path / "t1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["table", "--sweep", str(b), "--format", "csv", "--no-plot"]) == 0
    assert capsys.readouterr().out.startswith("dataset,method")
    with pytest.raises(SystemExit) as exc:  # the parser answers before any work
        main(["table", "--sweep", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "nope: no such directory" in err


# ---- runs that logged their evaluations (evaluations.npz): any criterion, chosen after the fact ---------------
# the runs are sweep_fakes.write_logged_run's: PATTERNS says what each evaluation scores, class0_right its test numbers


@pytest.fixture
def logged(tmp_path):
    root = tmp_path / "logged"
    for seed in (0, 1):
        for comb in LOGGED:
            write_logged_run(root, comb, seed, tmp_path / "xrm_groups.npz")
    return root


class FirstEvaluation(Criterion):
    """A plug-in criterion, named on the command line as <this module>:FirstEvaluation."""

    name = "first_evaluation"
    description = "the first evaluation"

    def score(self, log, t, external_groups=None):
        return 1.0 if t == 0 else None


def _chosen(root: Path, selection: str) -> list[tuple[int, int, int, float]]:
    cell = build_table(collect_runs([root]), selection).cells[("toy", "erm")]
    return [(c["seed"], c["comb"], c["epoch"], round(c["worst"], 6)) for c in cell.choices]


def test_logged_runs_are_selected_from_their_evaluations(logged):
    # (comb, epoch) per criterion, worked out in PATTERNS' comments; ties between combs: the lower comb
    expected = {
        "va_wga": (1, 2),  # comb 0's best is B (0.667) at epoch 2, comb 1's E (0.833) at epoch 2
        "avg": (0, 1),  # C and E tie at 0.9375: comb 0, epoch 1
        "worst_class": (0, 3),  # comb 0: C and A tie at 0.875, the later (epoch 3); comb 1 E ties it
        "va_gi_wga": (0, 3),  # groups = a from the spec's inferred_groups file: A (0.875) ties E
        "last": (1, 2),  # comb 0 ends on A (0.875 average), comb 1 on E (0.9375)
        "test_wga": (1, 2),  # the oracle: the highest test worst-group accuracy
    }
    for name, (comb, epoch) in expected.items():
        worst = class0_right(comb, epoch - 1) / 10
        assert _chosen(logged, name) == [(s, comb, epoch, worst) for s in (0, 1)], name
    t = build_table(collect_runs([logged]), "va_wga")
    assert t.cells[("toy", "erm")].stat("avg") == pytest.approx((0.75, 0.0))
    assert "| ✗ | ✓ | ERM | 75.0 ± 0.0 | 50.0 ± 0.0 |" in format_table(t, "md")
    oracle = build_table(collect_runs([logged]), "test_wga")
    assert any("oracle" in n for n in oracle.notes) and "ORACLE" in format_table(oracle, "md")


def test_criterion_registered_after_the_runs(logged, sweeps, capsys):
    import memaware.selection as sel

    class NegAvg(sel.Criterion):
        name = "neg_avg"
        description = "lowest validation average accuracy (a test criterion)"

        def score(self, log, t, external_groups=None):
            return -sel.get_criterion("val_avg").score(log, t)

    sel.register_criterion(NegAvg)
    try:
        # comb 0's worst is B (epoch 2), comb 1's B (epoch 1): a tie, so comb 0
        assert _chosen(logged, "neg_avg") == [(0, 0, 2, 0.2), (1, 0, 2, 0.2)]
        assert main(["table", "--sweep", str(logged), "--selection", "neg_avg", "--format", "json", "--no-plot"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["criterion"] == "neg_avg" and doc["val_groups"] == "no"
        assert [(c["comb"], c["epoch"]) for c in doc["cells"][0]["chosen"]] == [(0, 2), (0, 2)]
        old = build_table(collect_runs(sweeps), "neg_avg")  # results.json only: not computable, said so
        assert old.cells[("waterbirds", "erm")].n_seeds == 0 and any("neg_avg" in n for n in old.notes)
    finally:
        sel.unregister_criterion("neg_avg")
    plugin = f"{__name__}:FirstEvaluation"
    try:  # both combs tie at 1.0: comb 0, epoch 1
        assert main(["table", "--sweep", str(logged), "--selection", plugin, "--format", "csv", "--no-plot"]) == 0
        row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert (row["criterion"], row["seed_comb"], row["worst_pct"]) == ("first_evaluation", "0:0;1:0", "10.00")
    finally:
        unregister_criterion("first_evaluation")
    with pytest.raises(SystemExit):  # unregistered again: a flag error (one line, exit status 2)
        main(["table", "--sweep", str(logged), "--selection", "neg_avg", "--no-plot"])
    assert "unknown selection criterion 'neg_avg'" in capsys.readouterr().err


def test_logged_runs_without_groups_file_and_with_a_broken_log(tmp_path, capsys):
    root = tmp_path / "runs"
    for comb in LOGGED:
        write_logged_run(root, comb, 0, None)
    gi = build_table(collect_runs([root]), "va_gi_wga")
    assert gi.cells[("toy", "erm")].n_seeds == 0 and any("val_gi_wga" in n for n in gi.notes)
    chosen = build_table(collect_runs([root]), "va_wga").cells[("toy", "erm")].choices
    (root / "erm" / "comb1_seed0" / "evaluations.npz").write_bytes(b"broken")
    t = build_table(collect_runs([root]), "va_wga")  # comb 1 is named and left out, never scored from less
    assert [c["comb"] for c in chosen] == [1] and [c["comb"] for c in t.cells[("toy", "erm")].choices] == [0]
    assert "toy/erm comb1_seed0: damaged: its evaluations.npz cannot be read; left out of every mean" in t.notes
    assert [r.state for r in t.missing] == ["damaged: its evaluations.npz cannot be read"]


def test_bar_colours_stay_distinct_beyond_ten_methods():
    from memaware.plots import pyplot
    from memaware.plots.table import bar_color

    plt = pyplot()
    for n in (7, 11, 20):
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        colours = [bar_color(cmap, i) for i in range(n)]
        assert len(set(colours)) == n
