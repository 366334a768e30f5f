"""`memaware theorem`: the JSON schema, the figure, the regime bookkeeping and bad input (exit 2)."""

from __future__ import annotations

import json

import pytest

from memaware.cli import main
from memaware.theory.sweep import SweepConfig, agreement, observed_regime, run_sweep

CELL_KEYS = {"sigma": float, "d": int, "n": int, "gamma": float, "rho": float, "lambda": float, "seed": int,
             "train_acc": float, "p_pred_eq_a": float, "p_pred_eq_y": float, "minority_test_acc": float,
             "predicted_regime": (str, type(None)), "solver_converged": bool}
SMALL = ["--n", "80", "--sigmas", "0", "1", "--dims", "5", "3000", "--seeds", "2", "--n-test", "2000"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("theorem")
    assert main(["theorem", "--out", str(out), "--quiet", *SMALL]) == 0
    return out, json.loads((out / "theorem.json").read_text())


def test_json_schema(small_run):
    _, res = small_run
    assert {"cells", "agreement", "seconds"} <= set(res)
    assert isinstance(res["seconds"], float) and res["seconds"] > 0
    assert res["agreement"] is None or 0.0 <= res["agreement"] <= 1.0
    assert len(res["cells"]) == 2 * 2 * 2  # sigmas x dims x seeds
    for cell in res["cells"]:
        for key, typ in CELL_KEYS.items():
            assert isinstance(cell[key], typ), (key, cell[key])
        assert cell["predicted_regime"] in ("core", "spurious") if cell["solver_converged"] else \
            cell["predicted_regime"] is None
        for key in ("train_acc", "p_pred_eq_a", "p_pred_eq_y", "minority_test_acc"):
            assert 0.0 <= cell[key] <= 1.0
    assert sorted({(c["sigma"], c["d"], c["seed"]) for c in res["cells"]}) == [
        (s, d, r) for s in (0.0, 1.0) for d in (5, 3000) for r in (0, 1)]


def test_small_run_shows_both_regimes_as_predicted(small_run):
    _, res = small_run
    cells = res["cells"]
    assert all(c["train_acc"] == 1.0 for c in cells)  # Setup 2.1 is separable by x_y
    for c in cells:
        if c["sigma"] == 0.0 or c["d"] == 5:  # no memorization possible: the label wins
            assert c["p_pred_eq_y"] >= 0.95 and c["predicted_regime"] == "core"
        else:  # sigma^2 d = 3000 >> boundary (~24 at n = 80): the attribute wins
            assert c["p_pred_eq_a"] >= 0.9 and c["predicted_regime"] == "spurious"
            assert c["minority_test_acc"] <= 0.1
    assert res["agreement"] == 1.0


def test_figure_is_a_png(small_run):
    out, _ = small_run
    data = (out / "phase.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert not list(out.glob(".*"))  # no temp files left behind by the atomic writes


def test_summary_is_printed_unless_quiet(tmp_path, capsys):
    args = ["theorem", "--out", str(tmp_path), "--n", "40", "--sigmas", "0", "--dims", "5", "--seeds", "1",
            "--n-test", "200"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "agreement" in out and "boundary" in out and "theorem.json" in out
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("bad, word", [
    (["--sigmas", "-0.1", "0.5"], "sigma"), (["--dims", "0"], "noise dimension"), (["--rho", "0.5"], "rho"),
    (["--rho", "1.01"], "rho"), (["--lambda", "0"], "lambda"), (["--seeds", "0"], "seeds"),
    (["--n-test", "1"], "n_test"), (["--gamma", "-1"], "gamma"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, bad, word):
    assert main(["theorem", "--out", str(tmp_path), "--quiet", "--n", "40", "--dims", "5", *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("memaware theorem: error:") and word in err and "\n" not in err
    assert not (tmp_path / "theorem.json").exists()


def test_observed_regime_and_agreement_rules():
    assert observed_regime(0.95, 0.05) == "spurious"
    assert observed_regime(0.5, 0.9) == "core"
    assert observed_regime(0.7, 0.7) == "mixed"

    def cell(p_a, p_y, pred, conv=True):
        return {"p_pred_eq_a": p_a, "p_pred_eq_y": p_y, "predicted_regime": pred, "solver_converged": conv}

    cells = [cell(0.95, 0.5, "spurious"), cell(0.5, 0.99, "core"), cell(0.5, 0.99, "spurious"),
             cell(0.7, 0.7, "core"),  # mixed: not judged
             cell(0.99, 0.5, None, conv=False)]  # solver did not converge: not judged
    assert agreement(cells) == pytest.approx(2 / 3)
    assert agreement([cell(0.7, 0.7, "core")]) is None


def test_sweep_is_reproducible_and_seeds_differ():
    cfg = SweepConfig(n=40, sigmas=(0.5,), dims=(200,), seeds=2, n_test=500)
    a, b = run_sweep(cfg), run_sweep(cfg)
    assert a == b
    assert a[0]["p_pred_eq_a"] != a[1]["p_pred_eq_a"]


@pytest.mark.slow
def test_default_run_meets_the_issue_targets(tmp_path):
    assert main(["theorem", "--out", str(tmp_path), "--quiet"]) == 0
    res = json.loads((tmp_path / "theorem.json").read_text())
    cfg, cells = res["config"], res["cells"]
    assert (cfg["n"], cfg["gamma"], cfg["rho"], cfg["lambda"], cfg["seeds"]) == (500, 5.0, 0.9, 1e-3, 3)
    assert len(cfg["sigmas"]) >= 8 and min(cfg["sigmas"]) == 0.0 and max(cfg["sigmas"]) == 1.0
    assert len(cfg["dims"]) >= 6 and min(cfg["dims"]) == 50 and max(cfg["dims"]) == 4000
    assert all(c["train_acc"] == 1.0 for c in cells)
    assert all(c["p_pred_eq_y"] >= 0.95 for c in cells if c["sigma"] == 0.0)
    deep = [c for c in cells if c["sigma"] == 1.0 and c["d"] >= 2000]  # sigma^2 d >> 150, sigma sqrt(d/m) < 3
    assert deep and all(c["p_pred_eq_a"] >= 0.9 for c in deep)
    assert res["agreement"] >= 0.9
    assert res["seconds"] <= 120


@pytest.mark.slow
def test_second_setting_agrees(tmp_path):
    args = ["--n", "250", "--gamma", "8", "--rho", "0.8",
            "--sigmas", "0", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "3"]
    assert main(["theorem", "--out", str(tmp_path), "--quiet", *args]) == 0
    res = json.loads((tmp_path / "theorem.json").read_text())
    observed = {observed_regime(c["p_pred_eq_a"], c["p_pred_eq_y"]) for c in res["cells"]}
    assert {"core", "spurious"} <= observed  # both phases present, so agreement is not trivial
    assert res["agreement"] >= 0.9
