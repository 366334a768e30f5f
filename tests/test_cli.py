import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from memaware.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fig1_reproduces_the_paper(tmp_path, capsys):
    """Full defaults (1000 epochs, d = 1798): the numbers of the paper's Fig. 1."""
    code, out, _ = _run(capsys, "fig1", "--out", str(tmp_path), "--quiet")
    assert code == 0 and out == ""
    res = json.loads((tmp_path / "fig1.json").read_text())
    assert set(res) >= {"runs", "seconds"} and set(res["runs"]) == {"erm_noiseless", "erm_noisy", "mat_noisy"}
    runs = {k: r["final"] for k, r in res["runs"].items()}
    for r in runs.values():
        assert set(r) == {"train", "test"} and set(r["test"]) == {"majority", "minority"}
        assert r["train"]["majority"] >= 0.99 and r["train"]["minority"] >= 0.99
    assert runs["erm_noiseless"]["test"]["minority"] >= 0.95
    assert runs["erm_noisy"]["test"]["minority"] <= 0.35
    assert runs["mat_noisy"]["test"]["minority"] >= 0.90
    hist = res["runs"]["mat_noisy"]["history"]
    assert len(hist["epoch"]) == 1000 and len(hist["test"]["minority"]) == 1000
    assert (tmp_path / "fig1.png").stat().st_size > 10_000


def _synth(tmp_path, capsys, *extra):
    path = tmp_path / "data.npz"
    code, out, _ = _run(capsys, "synth", "--out", str(path), *extra)
    assert code == 0 and "wrote" in out
    return path


def test_train_defaults_mat_beats_erm(tmp_path, capsys):
    path = _synth(
        tmp_path, capsys, "--n-train", "600", "--n-val", "400", "--n-test", "400", "--noise-dim", "1000"
    )
    wga = {}
    for method in ("erm", "mat"):
        code, out, _ = _run(
            capsys, "train", "--data", str(path), "--method", method, "--out", str(tmp_path / method)
        )
        assert code == 0 and "worst-group acc" in out
        res = json.loads((tmp_path / method / "results.json").read_text())
        assert res["method"] == method and res["selection"] == "val_wga"
        for split in ("val", "test"):
            assert set(res[split]) >= {"avg_acc", "worst_group_acc", "groups"}
            assert set(res[split]["groups"]) == {"y=0,a=0", "y=0,a=1", "y=1,a=0", "y=1,a=1"}
        wga[method] = res["test"]["worst_group_acc"]
        state = torch.load(tmp_path / method / "model.pt", weights_only=True)
        assert state["heads.linear.weight"].shape == (2, 1002)
    assert wga["mat"] >= wga["erm"] + 0.4


def test_train_three_classes(tmp_path, capsys):
    path = _synth(
        tmp_path,
        capsys,
        "--num-classes",
        "3",
        "--n-train",
        "900",
        "--n-val",
        "450",
        "--n-test",
        "450",
        "--noise-dim",
        "600",
    )
    wga = {}
    for method in ("erm", "mat"):
        code, _, _ = _run(
            capsys,
            "train",
            "--data",
            str(path),
            "--method",
            method,
            "--out",
            str(tmp_path / method),
            "--epochs",
            "400",
            "--quiet",
        )
        assert code == 0
        res = json.loads((tmp_path / method / "results.json").read_text())
        assert len(res["test"]["groups"]) == 9
        wga[method] = res["test"]["worst_group_acc"]
    assert wga["mat"] >= wga["erm"] + 0.4


def test_train_xrm_and_inferred_selection(tmp_path, capsys):
    path = _synth(
        tmp_path, capsys, "--n-train", "200", "--n-val", "100", "--n-test", "100", "--noise-dim", "50"
    )
    with np.load(path) as z:
        arrays = dict(z)
    arrays["a"] = np.where(arrays["split"] == 0, arrays["a"], -1)  # no attributes outside training
    noval = tmp_path / "noval.npz"
    np.savez(noval, **arrays)
    code, _, _ = _run(
        capsys,
        "train",
        "--data",
        str(noval),
        "--method",
        "mat",
        "--out",
        str(tmp_path / "m"),
        "--epochs",
        "20",
        "--quiet",
    )
    assert code == 0
    res = json.loads((tmp_path / "m" / "results.json").read_text())
    assert res["selection"] == "val_gi_wga"
    code, _, _ = _run(
        capsys,
        "train",
        "--data",
        str(path),
        "--method",
        "xrm",
        "--out",
        str(tmp_path / "x"),
        "--epochs",
        "20",
        "--batch-size",
        "32",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--quiet",
    )
    assert code == 0


BAD = {
    "missing_key": ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 0])}, "missing required field 'split'"),
    "mismatched": (
        {"x": np.zeros((3, 2)), "y": np.array([0, 1]), "split": np.array([0, 1, 2])},
        "has 2 entries",
    ),
    "nan": (
        {"x": np.array([[np.nan], [0.0], [1.0]]), "y": np.array([0, 1, 0]), "split": np.array([0, 1, 2])},
        "non-finite value nan",
    ),
    "inf": (
        {"x": np.array([[-np.inf], [0.0], [1.0]]), "y": np.array([0, 1, 0]), "split": np.array([0, 1, 2])},
        "non-finite value -inf",
    ),
    "noninteger": (
        {"x": np.zeros((3, 1)), "y": np.array([0.0, 1.5, 0.0]), "split": np.array([0, 1, 2])},
        "field 'y' must hold integers",
    ),
    "out_of_range": (
        {"x": np.zeros((3, 1)), "y": np.array([0, -2, 0]), "split": np.array([0, 1, 2])},
        "field 'y' must be in 0..K-1",
    ),
    "empty_split": (
        {"x": np.zeros((3, 1)), "y": np.array([0, 1, 0]), "split": np.array([0, 1, 1])},
        "split 2 (test) has no examples",
    ),
    "object": (
        {"x": np.zeros((3, 1)), "y": np.array([0, 1, 0], dtype=object), "split": np.array([0, 1, 2])},
        "object (pickled) array",
    ),
}


@pytest.mark.parametrize("case", [*BAD, "not_npz"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    path = tmp_path / f"{case}.npz"
    if case == "not_npz":
        path.write_bytes(b"\x00\x01 definitely not a zip archive")
        message = "is not an .npz archive (unrecognised content"
    else:
        arrays, message = BAD[case]
        np.savez(path, **arrays)
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, "train", "--data", str(path), "--method", "erm", "--out", str(out_dir))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]
    assert "Traceback" not in err and out == ""
    assert not out_dir.exists()


def test_console_script_entry_point(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("nope")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "memaware",
            "train",
            "--data",
            str(bad),
            "--method",
            "mat",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    helptext = subprocess.run(
        [sys.executable, "-m", "memaware", "train", "--help"], capture_output=True, text=True
    )
    assert helptext.returncode == 0 and "--temperature" in helptext.stdout and "--mat-mode" in helptext.stdout


def test_bad_flag_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "d.npz").touch()  # exists: the flag, not the file, is at fault
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tmp_path / "d.npz"), "--method", "erm", "--out", str(tmp_path), "--hidden", "x"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--hidden takes comma-separated integers" in err


def test_reproduce_runs_the_figures_in_one_process(tmp_path, capsys):
    """The main job's figure stages: theorem, fig1 and fig3 in one process (fig1/fig3 change torch's thread count;
    theorem's batched solves must not run after that change, see memaware.threads), then the claim report. Table 1
    and Fig. 2 run in tests/test_reproduce_report.py."""
    assert main(["reproduce", "--only", "fig3,fig1", "theorem", "--out", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"fig1.png", "fig1.json", "fig3.png", "fig3.json", "phase.png", "theorem.json", "REPORT.md",
                     "report.html"}
    assert json.loads((tmp_path / "theorem.json").read_text())["agreement"] >= 0.9
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Fig. 1" in report and "## Theorem 2.2" in report and "## Fig. 3" in report
    assert "no table1.json in the results folder" in report  # the stage that did not run is said, not hidden
