import csv
import io
import json
from pathlib import Path

import pytest

from memaware.artifacts import write_json
from memaware.cli import main
from memaware.errors import ConfigError
from memaware.table import build_table, collect_runs, criterion_key, format_table

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
    if layout == "criteria":  # memaware.runner
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
    assert "2 of 12 runs have no results" in captured.err and "groupdro comb1_seed1: unfinished" in captured.err
    assert "86.5 ± 1.5" in out.read_text()
    png = tmp_path / "t1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["table", "--sweep", str(b), "--format", "csv", "--no-plot"]) == 0
    assert capsys.readouterr().out.startswith("dataset,method")
    assert main(["table", "--sweep", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
