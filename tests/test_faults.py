"""Lose nothing (issue 29): a run folder is checked before anything in it is removed, resume refuses changed
data, divergence stops a run, and every failure a user can cause is one line (exit 2; 3 for divergence; 4 for the
machine's I/O). Each test states the user's files that must survive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from memaware import fit
from memaware.cli import main
from memaware.data import load_npz, make_setup21
from memaware.engine import TrainConfig
from memaware.engine.checkpoint import Checkpointer
from memaware.errors import ConfigError, DataError, DivergenceError
from memaware.experiments.train import run_training
from memaware.runfolder import RECORD, FolderLock


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """Two Setup 2.1 files of the same size and shape, different content (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("faults")
    paths = root / "d.npz", root / "d_seed1.npz"
    for seed, path in enumerate(paths):
        make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=20, seed=seed).save_npz(path)
    return paths


def _cli(capsys, *argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, want: int, *words: str) -> None:
    assert code == want and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    for w in words:
        assert w in err, err


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and time, but the lock's (taken and released by each command)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.name != ".lock"}


def _spec(path: Path, epochs: int = 6, method: str = "erm", **hp) -> dict:
    return {"method": method, "data": str(path), "seed": 0, "hparams": {"epochs": epochs, **hp},
            "selection": "auto", "save_model": True, "checkpoint_every": 1}  # fmt: skip


def _killed_at(monkeypatch, epoch: int) -> None:
    """The next run dies right after writing its checkpoint of ``epoch`` (what kill -9 leaves)."""
    real = Checkpointer.end_of_epoch

    def end_of_epoch(self, e, stop, run):
        real(self, e, stop, run)
        if e == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "end_of_epoch", end_of_epoch)


def _numbers(res: dict) -> tuple:
    return res["selected_epoch"], res["val"]["avg_acc"], res["test"]["avg_acc"], res["test"]["worst_group_acc"]


# ---- 1. a run folder is checked before anything is removed ---------------------------------------------------


def test_bad_input_into_a_finished_folder_removes_nothing(tmp_path, capsys, files):
    out = tmp_path / "r"
    code, _ = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--epochs", "3", "--out", out, "--quiet")
    assert code == 0
    (out / "notes.txt").write_text("mine")
    (out / "checkpoint_resnet50_epoch90.pt").write_bytes(b"mine too")
    before = _snapshot(out)
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "mat", "--epochs", "0", "--out", out)
    _one_line(code, err, 2, "epochs must be >= 1")
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--epochs", "3", "--out", out)
    _one_line(code, err, 2, "holds a finished run", "--overwrite")
    assert _snapshot(out) == before  # nothing removed, nothing rewritten
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--epochs", "4", "--out", out,
                     "--overwrite", "--quiet")  # fmt: skip
    assert code == 0 and "--overwrite removed" in err
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoint_resnet50_epoch90.pt").exists()
    assert json.loads((out / "results.json").read_text())["hparams"]["epochs"] == 4


def test_a_user_file_with_a_name_memaware_writes_is_never_replaced(tmp_path, capsys, files):
    out = tmp_path / "r"
    out.mkdir()
    (out / "model.pt").write_bytes(b"my own model")
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--epochs", "2", "--out", out)
    _one_line(code, err, 2, "holds model.pt, which memaware did not write")
    assert (out / "model.pt").read_bytes() == b"my own model"


def test_kill_then_resume_equals_an_uninterrupted_run_and_changed_data_is_refused(tmp_path, monkeypatch, files):
    clean = run_training(_spec(files[0]), tmp_path / "clean")
    out = tmp_path / "r"
    _killed_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_training(_spec(files[0]), out)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").is_file() and not (out / "results.json").exists()
    with pytest.raises(ConfigError, match=r"holds an unfinished run .*--resume to continue it"):
        run_training(_spec(files[0]), out)
    with pytest.raises(ConfigError, match=r"d_seed1.npz is not the data the run in .* started on \(.*d.npz\): "
                       r"field 'x', field 'y', field 'a' differ \(same shape \(140, 22\)\)"):  # fmt: skip
        run_training(_spec(files[1]), out, resume=True)
    with pytest.raises(ConfigError, match=r"started with other settings \(hparams.lr: 0.01 then, 0.5 now\)"):
        run_training(_spec(files[0], lr=0.5), out, resume=True)
    assert (out / "checkpoint.pt").is_file()  # still there for the right --resume
    resumed = run_training(_spec(files[0]), out, resume=True)
    assert resumed["resumed_from"] == 3 and _numbers(resumed) == _numbers(clean)
    assert not (out / "checkpoint.pt").exists()  # finished: the checkpoints are removed, nothing else
    again = run_training(_spec(files[0]), out, resume=True)  # a finished run is reported as it is
    assert _numbers(again) == _numbers(clean)


def test_resume_with_another_model_or_a_damaged_checkpoint_is_one_line(tmp_path, capsys, monkeypatch, files):
    out = tmp_path / "r"
    _killed_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_training(_spec(files[0], hidden=[8]), out)
    monkeypatch.undo()
    argv = ["train", "--data", files[0], "--method", "erm", "--epochs", "6", "--out", out, "--resume"]
    code, err = _cli(capsys, *argv)  # without --hidden 8: another model
    _one_line(code, err, 2, "was started with other settings (hparams.hidden: [8] then, [] now)", "--overwrite")
    good = (out / "checkpoint.pt").read_bytes()
    for damage in (good[: len(good) // 2], b"", os.urandom(4096)):
        (out / "checkpoint.pt").write_bytes(damage)
        with pytest.raises(ConfigError, match=r"checkpoint .*checkpoint.pt cannot be read .*--overwrite"):
            run_training(_spec(files[0], hidden=[8]), out, resume=True)
        assert (out / "checkpoint.pt").read_bytes() == damage  # not removed: the user decides
    (out / "checkpoint.pt").write_bytes(good)
    res = run_training(_spec(files[0], hidden=[8]), out, resume=True)
    assert res["resumed_from"] == 2


def test_two_processes_on_one_folder_and_a_stale_lock(tmp_path, capsys, files):
    out = tmp_path / "r"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from memaware.runfolder import FolderLock; "
         "FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--epochs", "2", "--out", out)
        _one_line(code, err, 2, f"is in use by another memaware process (process {holder.pid})")
        code, err = _cli(capsys, "sweep", "--data", files[0], "--methods", "erm", "--n-hparams", "1", "--seeds", "1",
                         "--set", "epochs=2", "--jobs", "1", "--out", out, "--quiet")  # fmt: skip
        _one_line(code, err, 2, "sweep folder", "in use by another memaware process")
    finally:
        holder.kill()  # kill -9: the kernel drops its lock, its id stays in the file
        holder.wait()
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--epochs", "2", "--out", out, "--quiet")
    assert code == 0 and f"took over the lock of process {holder.pid}, which ended without releasing it" in err


# ---- 3. divergence stops the run --------------------------------------------------------------------------------


def test_divergence_stops_the_run_with_exit_3_and_no_results(tmp_path, capsys, files):
    out = tmp_path / "r"
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--lr", "1e6", "--hidden", "32",
                     "--epochs", "50", "--out", out)  # fmt: skip
    _one_line(code, err, 3, "erm diverged at epoch", "step", "lower --lr")
    assert not (out / "results.json").exists() and not (out / "model.pt").exists()


def test_divergence_keeps_the_last_finite_checkpoint(tmp_path, files):
    data = load_npz(files[0])
    cfg = TrainConfig(epochs=200, lr=1e3, momentum=0.9)
    with pytest.raises(DivergenceError) as e:
        fit(data, "mat", cfg, model_kwargs={"hidden": (16,)}, checkpoint=tmp_path / "c.pt", checkpoint_every=1)
    assert e.value.method == "xrm" and e.value.phase == "XRM phase 1" and e.value.epoch >= 1
    assert not np.isfinite(e.value.value) and "xrm (XRM phase 1) diverged at epoch" in str(e.value)
    state = torch.load(tmp_path / "c.xrm.pt", weights_only=True)
    assert state["epoch"] == e.value.epoch - 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize(
    "flag, value, words",
    [("--lr", "inf", "argument --lr: must be a finite number in (0, inf)"),
     ("--lr", "0", "argument --lr"), ("--weight-decay", "nan", "argument --weight-decay"),
     ("--momentum", "nan", "argument --momentum"), ("--momentum", "-3", "in [0, 1), got '-3'"),
     ("--head-dropout", "1", "argument --head-dropout")],
)  # fmt: skip
def test_hyper_parameters_are_finite_and_in_range_on_the_command_line(tmp_path, capsys, files, flag, value, words):
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", flag, value, "--out", tmp_path / "o")
    _one_line(code, err, 2, words)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kwargs, words",
    [({"lr": "0.1"}, "lr must be a number, got '0.1' (str)"), ({"lr": float("inf")}, "lr must be a finite"),
     ({"weight_decay": float("nan")}, "weight_decay must be a finite"), ({"momentum": -3.0}, "momentum must be in"),
     ({"momentum": 1.0}, "momentum must be in [0, 1)"), ({"epochs": 2.5}, "epochs must be an integer"),
     ({"device": "gpu"}, "device must be a torch device"), ({"dual": "yes"}, "dual must be True or False")],
)  # fmt: skip
def test_train_config_checks_every_field(kwargs, words):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert words in str(e.value) and isinstance(e.value, ValueError)


def test_fit_refuses_what_is_not_data(files):
    with pytest.raises(ConfigError, match="fit takes GroupData or a dataset .*got list"):
        fit([1, 2, 3], "erm")


# ---- degenerate data ----------------------------------------------------------------------------------------


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"x": np.eye(4) * np.array([1, 1, 1e30, 1]), "y": [0, 1, 0, 1]}, "features beyond 1e+15"),
        ({"x": np.ones(4), "y": [0, 1, 0, 1]}, "field 'x' must be 2-D (n, d), found shape (4,)"),
        ({"x": np.ones((4, 2)) + 1j, "y": [0, 1, 0, 1]}, "field 'x' is complex"),
        ({"x": np.eye(4), "y": [0, 2, 0, 2]}, "label 1 has no example"),
    ],
)
def test_degenerate_data_is_one_line(tmp_path, capsys, arrays, words):
    path = _write(tmp_path / "bad.npz", split=[0, 0, 1, 2], **arrays)
    code, err = _cli(capsys, "train", "--data", path, "--method", "erm", "--out", tmp_path / "o")
    _one_line(code, err, 2, str(path), words)
    assert not (tmp_path / "o").exists()


def test_one_class_in_the_training_split_is_refused_by_fit(tmp_path):
    data = load_npz(_write(tmp_path / "one.npz", x=np.eye(4), y=[1, 1, 0, 1], split=[0, 0, 1, 2]))
    with pytest.raises(DataError, match=r"the training split holds one class only \(\[1\]\)"):
        fit(data, "erm", TrainConfig(epochs=1))


# ---- 5. one line for every failure users can cause ----------------------------------------------------------


def test_unreadable_files_say_what_they_are(tmp_path, capsys, files):
    huge = tmp_path / "huge.npz"  # a header declaring a 149 GiB array in a tiny file
    with zipfile.ZipFile(huge, "w") as z:
        for key, arr in (("y", np.zeros(3, np.int64)), ("split", np.zeros(3, np.int64))):
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, arr)
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (200000, 200000)})
    truncated = tmp_path / "cut.npz"
    with zipfile.ZipFile(files[0]) as src, zipfile.ZipFile(truncated, "w") as z:
        for name in src.namelist():
            body = src.read(name)
            z.writestr(name, body[: len(body) // 2] if name == "x.npy" else body)
    loop = tmp_path / "loop.npz"
    loop.symlink_to(loop)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    cases = [(huge, "declares shape (200000, 200000) of float32 (149 GiB)"),
             (truncated, "field 'x' declares shape (140, 22)"), (loop, "a symbolic link loop"),
             (fifo, "is a FIFO (named pipe), not a regular file")]  # fmt: skip
    for path, words in cases:
        code, err = _cli(capsys, "train", "--data", path, "--method", "erm", "--out", tmp_path / "o")
        _one_line(code, err, 2, words)
        assert "pickle" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "write, words",
    [(lambda p: np.savez(p, val_groups=-np.ones(40, np.int64)), "must be >= 0, found -1 at index 0"),
     (lambda p: np.savez(p, val_groups=np.zeros(40) + 0.5), "must be 1-D integers, found float64"),
     (lambda p: p.write_text("row,val_groups\n0,1\n1,2\n"), "is a text table (CSV)")],
)  # fmt: skip
def test_inferred_groups_are_checked_like_any_data_file(tmp_path, capsys, files, write, words):
    path = tmp_path / "groups.npz"
    write(path)
    out = tmp_path / "o"
    code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--epochs", "2",
                     "--inferred-groups", path, "--out", out)  # fmt: skip
    _one_line(code, err, 2, "--inferred-groups", words)
    assert "allow_pickle" not in err and not out.exists()


def test_output_folders_that_cannot_be_made_are_one_line(tmp_path, capsys, files):
    for out, words in ((tmp_path / ("a" * 300), "longer than file systems allow (255)"),
                       ("/proc/memaware/run", "cannot create")):  # fmt: skip
        code, err = _cli(capsys, "train", "--data", files[0], "--method", "erm", "--out", out)
        _one_line(code, err, 2, words)


def test_disk_full_says_so_names_the_file_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, files):
    out = tmp_path / "r"
    _killed_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_training(_spec(files[0]), out)
    monkeypatch.undo()
    good = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk_save(obj, f, *a, **k):  # what torch's zip writer says when the disk fills up
        if str(f).endswith(".pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 128 vs 0")
        return real_save(obj, f, *a, **k)

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(os, "statvfs", lambda p: Full())
    argv = ["train", "--data", files[0], "--method", "erm", "--epochs", "6", "--out", out, "--resume"]
    code, err = _cli(capsys, *argv)  # the checkpoint written when training ends hits the full disk
    _one_line(code, err, 4, f"no space left on device writing {out / 'checkpoint.pt'}", "--resume")
    assert (out / "checkpoint.pt").read_bytes() == good
    assert not [p for p in out.iterdir() if p.name.startswith(".checkpoint")]  # no partial file left


# ---- sweeps -------------------------------------------------------------------------------------------------


def test_a_sweep_refuses_changed_data_resumes_moved_and_retrains_damaged(tmp_path, capsys):
    data = tmp_path / "d.npz"
    make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=20, seed=0).save_npz(data)
    argv = ["sweep", "--data", data, "--methods", "erm,mat", "--n-hparams", "1", "--seeds", "1",
            "--set", "epochs=3", "--jobs", "1", "--quiet"]  # fmt: skip
    assert _cli(capsys, *argv, "--out", tmp_path / "s")[0] == 0
    first = {p.parent.name + p.parent.parent.name: json.loads(p.read_text())["test"]
             for p in (tmp_path / "s").rglob("results.json")}  # fmt: skip
    make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=20, seed=1).save_npz(data)
    code, err = _cli(capsys, *argv, "--out", tmp_path / "s")
    _one_line(code, err, 2, f"{data} changed since this sweep started", "field 'x'")
    make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=20, seed=0).save_npz(data)
    (tmp_path / "s").rename(tmp_path / "moved")
    erm = tmp_path / "moved" / "erm" / "comb0_seed0"
    (erm / "results.json").write_text('{"method": "erm", "te')  # truncated
    (tmp_path / "moved" / "mat" / "comb0_seed0" / "evaluations.npz").unlink()
    code, err = _cli(capsys, "table", "--sweep", tmp_path / "moved", "--no-plot")
    assert code == 0 and "damaged: results.json cannot be read" in err and "evaluations.npz is missing" in err
    assert _cli(capsys, *argv, "--out", tmp_path / "moved")[0] == 0  # its XRM run's groups found by relative path
    again = {p.parent.name + p.parent.parent.name: json.loads(p.read_text())["test"]
             for p in (tmp_path / "moved").rglob("results.json")}  # fmt: skip
    assert again == first
    assert json.loads((erm / "spec.json").read_text())["inferred_groups"] == "../../xrm/comb0_seed0/inferred_groups.npz"
    assert (erm / RECORD).is_file()


def test_a_stale_lock_in_a_sweep_run_folder_is_taken_over(tmp_path):
    lock = FolderLock(tmp_path)
    (tmp_path / ".lock").write_text("999999999\n")  # a process id that cannot be alive
    assert lock.acquire() and lock.stale == 999999999
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_a_diverged_batched_member_writes_no_results(tmp_path, files):
    from memaware.engine.many import execute_many

    specs = [{"method": "erm", "data": str(files[0]), "seed": s, "hparams": {"epochs": 20, "lr": 1e6, "hidden": [32]}}
             for s in (0, 1)]  # fmt: skip
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(DivergenceError, match=r"erm \(batched member a\) diverged: weight .* holds nan; lower --lr"):
        execute_many(specs, dirs)
    assert not any((d / "results.json").exists() for d in dirs)


@pytest.mark.parametrize("setting, words", [("momentum=-3", "momentum must be in [0, 1), got -3"),
                                            ("lr=0", "lr must be > 0, got 0")])  # fmt: skip
def test_sweep_settings_are_checked_before_any_run(tmp_path, capsys, files, setting, words):
    code, err = _cli(capsys, "sweep", "--data", files[0], "--methods", "erm", "--n-hparams", "1", "--seeds", "1",
                     "--set", setting, "--out", tmp_path / "s")  # fmt: skip
    _one_line(code, err, 2, f"--set {setting}: {words}")
    assert not (tmp_path / "s").exists()


def test_an_older_record_whose_log_is_missing_is_damaged_too(tmp_path, files):
    from memaware.runfolder import read_results
    from memaware.sweep.table_runs import collect_runs

    out = tmp_path / "s" / "erm" / "comb0_seed0"
    res = run_training(_spec(files[0], epochs=2), out)
    old = {k: v for k, v in res.items() if k not in ("evaluation_log", "fingerprint")}  # as before issue 29
    (out / "results.json").write_text(json.dumps(old))
    assert read_results(out / "results.json") is not None
    (out / "evaluations.npz").unlink()
    assert read_results(out / "results.json") is None  # a sweep trains it again
    (rec,) = collect_runs([tmp_path / "s"]).records
    assert rec.state == "damaged: its evaluations.npz is missing"


def test_sweep_overwrite_retrains_the_runs_of_changed_data_and_keeps_user_files(tmp_path, capsys):
    data = tmp_path / "d.npz"
    make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=20, seed=0).save_npz(data)
    argv = ["sweep", "--data", data, "--methods", "erm", "--n-hparams", "1", "--seeds", "1", "--set", "epochs=3",
            "--jobs", "1", "--quiet", "--out", tmp_path / "s"]  # fmt: skip
    assert _cli(capsys, *argv)[0] == 0
    run = tmp_path / "s" / "erm" / "comb0_seed0"
    (run / "my_notes.txt").write_text("mine")
    make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=20, seed=1).save_npz(data)
    code, err = _cli(capsys, *argv)
    _one_line(code, err, 2, "changed since this sweep started", "--overwrite")
    code, err = _cli(capsys, *argv, "--overwrite")
    assert code == 0 and "--overwrite cleared 2 run folder(s) of another spec or data" in err
    spec = json.loads((run / "spec.json").read_text())
    assert spec["data_fingerprint"] == json.loads((run / "results.json").read_text())["fingerprint"]["data"]
    assert (run / "my_notes.txt").read_text() == "mine"
    assert _cli(capsys, *argv)[0] == 0  # the re-run on the new data is a plain resume now
