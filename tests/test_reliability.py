"""Bad paths and flag values are answered before any work with one line and exit 2; the file a user gave is
named for what it is; a selection criterion is never silently replaced; Ctrl-C on a sweep leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from memaware.cli import main
from memaware.cli.common import comma_items, in_file, out_dir, out_file
from memaware.data import load_npz, make_setup21
from memaware.errors import DataError


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rel") / "d.npz"
    make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=20, seed=0).save_npz(path)
    return path


def _answer(capsys, argv: list[str]) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err, time.perf_counter() - t0


# every command that writes, with an output under a regular file; the rest of each command line is valid
COMMANDS = {
    "train": lambda d, o: ["train", "--data", d, "--method", "erm", "--out", o],
    "synth": lambda d, o: ["synth", "--out", f"{o}/x.npz"],
    "prepare": lambda d, o: ["prepare", "adult-sex", "--out", f"{o}/x.npz"],
    "sweep": lambda d, o: ["sweep", "--data", d, "--out", o],
    "memorization": lambda d, o: ["memorization", "--data", d, "--out", o],
    "theorem": lambda d, o: ["theorem", "--out", o],
    "fig1": lambda d, o: ["fig1", "--out", o],
    "fig3": lambda d, o: ["fig3", "--out", o],
    "reproduce": lambda d, o: ["reproduce", "--out", o],
    "features": lambda d, o: ["features", "--dataset", "waterbirds", "--data-dir", ".", "--backbone", "tiny-cnn",
                              "--out", f"{o}/f.npz"],  # fmt: skip
    "table --out": lambda d, o: ["table", "--sweep", ".", "--out", f"{o}/t.md"],
    "table --plot": lambda d, o: ["table", "--sweep", ".", "--plot", f"{o}/t.png"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_output_under_a_file_is_one_line_before_any_work(tmp_path, capsys, npz, command):
    afile = tmp_path / "afile"
    afile.write_text("a regular file")
    code, err, seconds = _answer(capsys, COMMANDS[command](str(npz), str(afile / "sub")))
    assert code == 2 and err.count("\n") == 1 and "is a file, not a directory" in err, err
    assert seconds < 5  # the parser answers: nothing was trained (theorem, fig3 and reproduce take far longer)
    assert afile.read_text() == "a regular file" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_path_checks(tmp_path, monkeypatch):
    import argparse

    (tmp_path / "f").write_text("x")
    assert out_dir(str(tmp_path / "new" / "deeper")) and not (tmp_path / "new").exists()  # nothing created
    assert out_file(str(tmp_path / "new" / "x.npz"))
    for bad, fn, message in [
        (tmp_path / "f", out_dir, "is a file, not a directory"),
        (tmp_path / "f" / "x.npz", out_file, "is a file, not a directory"),
        (tmp_path, out_file, "is a directory; give a file name"),
        (tmp_path / "absent.npz", in_file, "no such file"),
        (tmp_path, in_file, "is a directory, not a file"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            fn(str(bad))
    # a folder we may not write into (what a read-only mount looks like to os.access)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(argparse.ArgumentTypeError, match=f"cannot create {tmp_path / 'o'}: {tmp_path} is not writable"):
        out_dir(str(tmp_path / "o"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--seeds", "99999999999"], "N from 1 to 10000"),
        (["sweep", "--seeds", "0,,3"], "without empty items, got '0,,3'"),
        (["sweep", "--seeds", "0,99999999999"], "between 0 and 4294967295"),
        (["sweep", "--methods", "erm,,mat"], "without empty items"),
        (["sweep", "--n-hparams", "99999999"], "out of range (1 to 10000)"),
        (["train", "--method", "erm", "--seed", "99999999999"], "argument --seed: 99999999999 is out of range"),
        (["train", "--method", "erm", "--epochs", "-3"], "argument --epochs: -3 is out of range"),
        (["train", "--method", "erm", "--hidden", "8,,8"], "without empty items"),
        (["train", "--method", "erm", "--inferred-groups", "nope.npz"], "--inferred-groups: nope.npz: no such file"),
        (["memorization", "--methods", "erm,"], "without empty items"),
    ],
)
def test_flag_values_are_bounded_and_lists_have_no_empty_items(tmp_path, capsys, npz, argv, message):
    argv = [*argv, "--data", str(npz), "--out", str(tmp_path / "o")]
    code, err, _ = _answer(capsys, argv)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_comma_items():
    assert comma_items(" a, b ", "--x") == ["a", "b"]
    for bad in ("a,,b", "a,", ",a", ""):
        with pytest.raises(Exception, match="without empty items"):
            comma_items(bad, "--x")


def test_each_kind_of_wrong_file_gets_its_own_message(tmp_path):
    cases = {
        "table.csv": (lambda p: p.write_text("x,y,split\n0.5,1,0\n"), "is a text table (CSV)"),
        "notes.npz": (lambda p: p.write_text("some notes\n"), "is a text file"),
        "data.pkl": (lambda p: p.write_bytes(pickle.dumps({"x": [1, 2]})), "is a Python pickle"),
        "model.pt": (lambda p: torch.save({"x": torch.zeros(2)}, p), "is a PyTorch file (torch.save)"),
        "empty.npz": (lambda p: p.touch(), "the file is empty (0 bytes)"),
        "one.npy": (lambda p: np.save(p, np.zeros(3)), "is a single .npy array"),
    }
    for name, (write, message) in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(DataError) as e:
            load_npz(path)
        text = str(e.value)
        assert text.startswith(str(path)) and message in text and "allow_pickle" not in text and "\n" not in text


def test_a_criterion_that_cannot_be_computed_is_refused_before_training(tmp_path, capsys, npz):
    out = tmp_path / "run"
    code, err, _ = _answer(capsys, ["train", "--data", npz, "--method", "erm", "--selection", "val_gi_wga",
                                    "--out", out])  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--inferred-groups DIR/inferred_groups.npz" in err
    assert "method 'erm' infers none" in err and not out.exists()


def test_a_run_reports_the_criterion_it_followed(tmp_path, capsys, npz):
    import json

    code, err, _ = _answer(capsys, ["train", "--data", npz, "--method", "xrm", "--selection", "val_gi_wga",
                                    "--epochs", "3", "--out", tmp_path / "x", "--quiet"])  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "x" / "results.json").read_text())
    assert res["selection"] == "val_gi_wga" and res["criteria"]["val_gi_wga"]["epoch"] == res["selected_epoch"]


def test_ctrl_c_on_a_sweep_exits_130_with_how_to_resume_and_no_leaks(tmp_path, npz):
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "memaware", "sweep", "--data", str(npz), "--methods", "erm,xrm", "--n-hparams", "2",
           "--seeds", "2", "--set", "epochs=100000", "--jobs", "2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # started as a shell starts a foreground command: SIGINT at its default (pytest's own disposition, which another
    # test may have left ignored, would otherwise be inherited, and a process started with SIGINT ignored keeps it so)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.rglob("spec.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the workers are training
        t0 = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground process group
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130 and time.monotonic() - t0 < 20
        assert err.strip().splitlines() == [
            "memaware sweep: interrupted; to resume, run the same command again (finished runs are skipped, "
            "interrupted ones continue from their checkpoints)"
        ], err
        assert "leaked" not in err and "Traceback" not in err
    finally:  # a failed assertion must not leave a 100000-epoch sweep or its workers running (their own group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
