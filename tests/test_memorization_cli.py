"""`memaware memorization` end to end: files, JSON schema, audit text, warnings, bad input."""

import json

import numpy as np
import pytest

from memaware.cli import main
from memaware.data import make_setup21
from memaware.memorization import gap_change, summarize, warnings_for
from memaware.memorization.audit import group_roles


def _run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # the parser's answer to a bad path or flag value
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("mem") / "s21.npz"
    make_setup21(n_train=300, n_val=20, n_test=20, noise_dim=600, seed=0).save_npz(path)
    return path


GROUP_KEYS = {"role", "n", "mean", "median", "std", "sem", "quantiles", "frac_above_0.5"}


def _check_schema(res, estimator, n):
    assert res["schema"] == "memaware.memorization/1" and res["estimator"] == estimator
    assert res["target"] and res["units"] and res["data"]["n_train"] == n
    assert set(res["methods"]) == {"erm", "mat"}
    for entry in res["methods"].values():
        assert entry["estimator"] == estimator and entry["target"] == res["target"]
        assert set(entry["groups"]) == {"y=0,a=0", "y=0,a=1", "y=1,a=0", "y=1,a=1"}
        for g in entry["groups"].values():
            assert set(g) == GROUP_KEYS and set(g["quantiles"]) == {"0.05", "0.1", "0.25", "0.5", "0.75", "0.9", "0.95"}
        assert sum(g["n"] for g in entry["groups"].values()) == n
        assert {"majority_mean", "minority_mean", "minority_minus_majority", "per_class"} <= set(entry["gap"])
    assert {"warnings", "gap_change", "most_memorized", "warn_gap", "no_attributes"} <= set(res["audit"])


def test_newton_audit_erm_memorizes_the_minority_mat_does_not(npz, tmp_path, capsys):
    code, out, _ = _run(capsys, "memorization", "--data", npz, "--estimator", "newton", "--out", tmp_path)
    assert code == 0
    res = json.loads((tmp_path / "memorization.json").read_text())
    _check_schema(res, "newton", 300)
    ch = res["audit"]["gap_change"]
    assert ch["erm_gap"] > 0.3 and ch["mat_gap"] < ch["erm_gap"] / 2
    assert res["methods"]["erm"]["gap"]["minority_mean"] > 0.3
    assert res["methods"]["erm"]["params"]["weight_decay"] == 1e-3  # the newton default
    assert any("WARNING [erm]" in w for w in res["audit"]["warnings"])
    assert "WARNING [erm]" in out and "groups from most to least memorized" in out and "smaller" in out
    with np.load(tmp_path / "scores.npz", allow_pickle=False) as z:
        assert {"index", "y", "a", "group", "score_erm", "score_mat", "baseline_erm", "leverage_erm"} <= set(z.files)
        assert z["score_erm"].shape == (300,) and str(z["estimator"]) == "newton"
        assert "se_erm" not in z.files  # newton has no standard error
    assert (tmp_path / "fig2.png").stat().st_size > 20_000


def test_subsample_and_trak_write_their_files(npz, tmp_path, capsys):
    code, out, _ = _run(capsys, "memorization", "--data", npz, "--num-models", "4", "--epochs", "60",
                        "--out", tmp_path / "sub", "--quiet")
    assert code == 0 and out == ""
    res = json.loads((tmp_path / "sub" / "memorization.json").read_text())
    _check_schema(res, "subsample", 300)
    assert res["methods"]["mat"]["params"]["num_models"] == 4
    with np.load(tmp_path / "sub" / "scores.npz") as z:
        assert np.isfinite(z["se_erm"]).all() and {"p_held_in_mat", "p_held_out_mat"} <= set(z.files)
    code, _, _ = _run(capsys, "memorization", "--data", npz, "--estimator", "trak", "--num-models", "2",
                      "--epochs", "60", "--methods", "erm", "--out", tmp_path / "trak", "--quiet")
    assert code == 0
    res = json.loads((tmp_path / "trak" / "memorization.json").read_text())
    assert set(res["methods"]) == {"erm"} and res["audit"]["gap_change"] is None
    assert res["methods"]["erm"]["params"]["proj_dim"] == 150  # min(512, min(n, p) / 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "waterbirds"], "needs --data-dir"),
        (["--dataset", "waterbirds", "--data-dir", "/nowhere"], "/nowhere: no such directory"),
        (["--data", "/nonexistent.npz"], "no such file"),
        (["--num-models", "3"], "even number"),
        (["--estimator", "newton", "--weight-decay", "0"], "weight decay > 0"),
        (["--estimator", "newton", "--hidden", "8"], "linear heads"),
        (["--estimator", "trak", "--proj-dim", "5000", "--epochs", "5"], "below the rank"),
        (["--backbone", "tiny-cnn"], "--backbone and --weights go with --dataset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(npz, tmp_path, capsys, extra, message):
    argv = ["memorization", "--out", tmp_path, *extra]
    if "--data" not in extra and "--dataset" not in extra:
        argv += ["--data", npz]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_real_dataset_is_embedded_and_audited(tmp_path, capsys):
    """--dataset NAME --data-dir DIR reads the layout `train --dataset` reads, embeds it with the backbone into
    DIR/features.npz, and audits the heads on those features (the same scores as --data on that file)."""
    from layout_fixtures import make_waterbirds

    make_waterbirds(tmp_path / "root", n_per_split=12)
    out = tmp_path / "audit"
    args = ["--methods", "erm", "--estimator", "newton", "--epochs", "5", "--seed", "1"]
    code, stdout, err = _run(capsys, "memorization", "--dataset", "waterbirds", "--data-dir", tmp_path / "root",
                             "--backbone", "tiny-cnn", "--image-size", "32", "--out", out, *args)  # fmt: skip
    assert code == 0, err
    res = json.loads((out / "memorization.json").read_text())
    assert res["data"]["n_train"] == 12 and "waterbirds" in res["data"]["source"]
    again = tmp_path / "again"
    code, _, err = _run(capsys, "memorization", "--data", out / "features.npz", "--out", again, *args)
    assert code == 0, err
    a, b = np.load(out / "scores.npz"), np.load(again / "scores.npz")
    assert np.array_equal(a["score_erm"], b["score_erm"]) and np.isfinite(a["score_erm"]).all()


def test_newton_on_three_classes_is_refused(tmp_path, capsys):
    path = tmp_path / "k3.npz"
    make_setup21(n_train=30, n_val=5, n_test=5, noise_dim=5, num_classes=3, seed=0).save_npz(path)
    code, _, err = _run(capsys, "memorization", "--data", path, "--estimator", "loo", "--out", tmp_path / "o")
    assert code == 2 and "binary" in err


def test_bad_methods_flag(npz, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["memorization", "--data", str(npz), "--methods", "erm,jtt", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--methods" in capsys.readouterr().err


def _groups(n_maj=90, n_min=10):
    y = np.array([0] * (n_maj + n_min) + [1] * (n_maj + n_min))
    a = np.array([0] * n_maj + [1] * n_min + [1] * n_maj + [0] * n_min)
    return y, a


def test_audit_warns_only_on_a_large_significant_gap():
    y, a = _groups()
    rng = np.random.default_rng(0)
    minority = a != y
    big = np.where(minority, 0.8, 0.02) + 0.01 * rng.standard_normal(len(y))
    s = summarize(big, y, a, 2)
    assert s["groups"]["y=0,a=1"]["role"] == "minority" and s["groups"]["y=1,a=1"]["role"] == "majority"
    assert abs(s["gap"]["minority_minus_majority"] - 0.78) < 0.01
    assert len(warnings_for("erm", s)) == 2
    even = 0.05 + 0.01 * rng.standard_normal(len(y))
    assert warnings_for("mat", summarize(even, y, a, 2)) == []
    # gap 0.3 >= warn_gap but within 3 standard errors (minority scores 0.3 +- 0.9): no warning
    spread = np.where(minority, 0.3 + 0.9 * np.resize([1.0, -1.0], len(y)), 0.0)
    assert summarize(spread, y, a, 2)["gap"]["minority_minus_majority"] == pytest.approx(0.3)
    assert warnings_for("erm", summarize(spread, y, a, 2)) == []
    assert warnings_for("erm", s, warn_gap=0.9) == []  # a larger threshold silences the big gap
    ch = gap_change({"erm": s, "mat": summarize(np.where(minority, 0.3, 0.02), y, a, 2)})
    assert abs(ch["reduction"] - (1 - 0.28 / 0.78)) < 0.02


def test_audit_without_attributes_and_majority_by_size():
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    g = np.array([0, 0, 0, 0, 1, 3, 2, 2, 2])  # class 1: group 2 is the larger one even though a != y there
    roles = group_roles(y, g)
    assert roles == {0: "majority", 1: "minority", 2: "majority", 3: "minority"}
    # a group at least half its class majority's size is a majority too (a CelebA-like class split ~50/50)
    assert group_roles(y[2:], g[2:]) == {0: "majority", 1: "majority", 2: "majority", 3: "minority"}
    s = summarize(np.linspace(0, 1, 9), y, -np.ones(9, dtype=int), 1)
    assert set(s["groups"]) == {"y=0,a=?", "y=1,a=?"} and s["gap"] == {}
    assert all(v["role"] == "unknown" for v in s["groups"].values()) and warnings_for("erm", s) == []
