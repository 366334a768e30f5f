import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sweep_fakes

from memaware import sweep as sw
from memaware.cli import main
from memaware.data.synthetic import make_setup21
from memaware.errors import ConfigError
from memaware.sweep import schedule
from memaware.sweep.hparams import sample_hparams

FAKE = "sweep_fakes:fake_execute"
TESTS = str(Path(__file__).parent)


def _npz(tmp_path: Path, name: str = "toy") -> Path:
    path = tmp_path / f"{name}.npz"
    make_setup21(n_train=120, n_val=60, n_test=60, noise_dim=40, seed=0).save_npz(path)
    return path


def _plan(tmp_path, methods=("erm", "mat"), n=2, seeds=(0, 1), out="sw", **kw):
    src = sw.DataSource.from_npz(tmp_path / "toy.npz")
    return sw.plan_sweep([src], methods, n, seeds, tmp_path / out, fixed={"epochs": 3}, **kw)


def _results(root: Path) -> dict[str, dict]:
    root = root.resolve()
    return {
        p.parent.relative_to(root).as_posix(): sweep_fakes.comparable(json.loads(p.read_text()), root)
        for p in root.rglob("results.json")
    }


def test_plan_layout_specs_and_xrm_first(tmp_path):
    runs = _plan(tmp_path, methods=("erm", "xrm", "mat"))
    root = (tmp_path / "sw").resolve()
    assert [r.rel(root) for r in runs[:2]] == ["xrm/comb0_seed0", "xrm/comb0_seed1"]
    assert len(runs) == 12 and len({r.run_dir for r in runs}) == 12  # xrm comb 0 planned once
    erm = next(r for r in runs if r.method == "erm" and r.comb == 1 and r.seed == 1)
    assert erm.run_dir == root / "erm" / "comb1_seed1" and erm.needs == root / "xrm" / "comb0_seed1"
    assert erm.spec == {
        "method": "erm",
        "data": str((tmp_path / "toy.npz").resolve()),
        "seed": 1,
        "comb": 1,
        "hparams": sample_hparams("erm", "features", 1, fixed={"epochs": 3}),
        "selection": "auto",
        "device": "cpu",
        "inferred_groups": "../../xrm/comb0_seed1/inferred_groups.npz",  # relative: a moved sweep resumes
    }
    assert all("inferred_groups" not in r.spec for r in runs if r.method in ("xrm", "mat"))
    only_erm = _plan(tmp_path, methods=("erm",))
    assert [r.role for r in only_erm if r.method == "xrm"] == ["groups", "groups"]
    assert [r.method for r in _plan(tmp_path, methods=("erm",), inferred_groups=False)] == ["erm"] * 4
    two = sw.plan_sweep(
        [sw.DataSource.from_npz(tmp_path / "a.npz"), sw.DataSource.from_npz(tmp_path / "b.npz")],
        ["mat"],
        1,
        [0],
        tmp_path / "sw",
    )
    assert [r.rel(root) for r in two] == ["a/mat/comb0_seed0", "b/mat/comb0_seed0"]
    with pytest.raises(ConfigError):
        _plan(tmp_path, methods=("erm", "erm"))


def test_sweep_skips_finished_runs_and_resumes(tmp_path):
    _npz(tmp_path)
    runs = _plan(tmp_path, methods=("erm", "jtt"), n=2, seeds=(0,))
    root = tmp_path / "sw"
    summary = sw.run_sweep(runs, root, jobs=1, execute=FAKE, progress=False)
    assert summary.complete and summary.done == 5 and summary.already_done == 0
    manifest = json.loads((root / "sweep.json").read_text())
    assert manifest["counts"] == {"done": 5} and {e["dir"] for e in manifest["runs"]} == {
        r.rel(root.resolve()) for r in runs
    }
    first = _results(root)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("results.json")}
    victim = root / "jtt" / "comb1_seed0"
    (victim / "results.json").unlink()
    again = sw.run_sweep(runs, root, jobs=1, execute=FAKE, progress=False)
    assert again.complete and again.already_done == 4 and again.done == 1
    assert _results(root) == first
    for p, t in stamps.items():
        if p.parent != victim:
            assert p.stat().st_mtime_ns == t  # finished runs are not touched
    other = _plan(tmp_path, methods=("erm", "jtt"), n=2, seeds=(0,))
    other[-1].spec["hparams"]["lr"] = 0.5
    with pytest.raises(ConfigError, match="hparams.lr"):
        sw.run_sweep(other, root, jobs=1, execute=FAKE, progress=False)


def test_failed_xrm_blocks_its_dependents(tmp_path, monkeypatch):
    _npz(tmp_path)
    monkeypatch.setenv("MEMAWARE_FAKE_FAIL", "xrm")
    runs = _plan(tmp_path, methods=("erm", "mat"), n=1, seeds=(0,))
    lines: list[str] = []
    summary = sw.run_sweep(runs, tmp_path / "sw", jobs=1, execute=FAKE, progress=False, log=lines.append)
    assert not summary.complete and summary.done == 1  # mat needs no XRM run
    assert dict(summary.failed) == {
        "xrm/comb0_seed0": "RuntimeError: fake failure of xrm",
        "erm/comb0_seed0": "its XRM run xrm/comb0_seed0 did not finish",
    }
    assert "RuntimeError" in (tmp_path / "sw" / "xrm" / "comb0_seed0" / "error.txt").read_text()
    status = {e["dir"]: e["status"] for e in json.loads((tmp_path / "sw" / "sweep.json").read_text())["runs"]}
    assert status == {"xrm/comb0_seed0": "failed", "erm/comb0_seed0": "blocked", "mat/comb0_seed0": "done"}
    monkeypatch.delenv("MEMAWARE_FAKE_FAIL")
    assert sw.run_sweep(runs, tmp_path / "sw", jobs=1, execute=FAKE, progress=False).complete  # re-run repairs


def test_a_run_locked_by_another_process_is_left_alone(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    _npz(tmp_path)
    runs = _plan(tmp_path, methods=("mat",), n=2, seeds=(0,))
    runs[0].run_dir.mkdir(parents=True)
    with open(runs[0].run_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a worker of another sweep on the same directory would
        summary = sw.run_sweep(runs, tmp_path / "sw", jobs=1, execute=FAKE, progress=False, log=lambda _: None)
    assert summary.busy == ["mat/comb0_seed0"] and summary.done == 1 and not summary.complete
    assert not (runs[0].run_dir / "results.json").exists()
    assert sw.run_sweep(runs, tmp_path / "sw", jobs=1, execute=FAKE, progress=False).complete


def test_vectorized_batches_one_call_per_method(tmp_path, monkeypatch):
    _npz(tmp_path)
    runs = _plan(tmp_path, methods=("erm", "mat"), n=2, seeds=(0, 1))
    sizes = sorted(len(b) for b in sw.make_batches(runs, vectorized=True))
    assert sizes == [2, 4, 4]  # xrm (2 seeds), erm and mat (2 combs x 2 seeds)
    summary = sw.run_sweep(
        runs, tmp_path / "sw", jobs=1, vectorized=True, execute="sweep_fakes:fake_execute_many", progress=False
    )
    assert summary.complete
    assert (tmp_path / "sw" / "erm" / "comb1_seed1" / "batch.txt").read_text() == "4"
    monkeypatch.setattr(schedule, "EXECUTE_MANY", "sweep_fakes:no_such_function")
    with pytest.raises(ConfigError, match="--vectorized: this version has no"):
        sw.run_sweep(_plan(tmp_path, out="v2"), tmp_path / "v2", vectorized=True, progress=False)


def test_submitit_local_executor_builds_and_runs_jobs(tmp_path, monkeypatch):
    """The Slurm code path (a job array of RunBatch callables) run by submitit's LocalExecutor: one job per
    (method, data) here (vectorized), to start one Python process only."""
    pytest.importorskip("submitit")
    _npz(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    runs = _plan(tmp_path, methods=("mat",), n=2, seeds=(0,), out="sub")
    opts = sw.SlurmOptions(gpus=0, time_min=5)
    summary = sw.run_sweep(
        runs,
        tmp_path / "sub",
        executor="submitit-local",
        jobs=2,
        vectorized=True,
        execute="sweep_fakes:fake_execute_many",
        progress=False,
        slurm=opts,
    )
    assert summary.complete and summary.done == 2
    assert len(list((tmp_path / "sub" / "submitit").glob("*_submitted.pkl"))) == 1  # submitit's job pickle
    assert (tmp_path / "sub" / "mat" / "comb1_seed0" / "batch.txt").read_text() == "2"
    runs = _plan(tmp_path, methods=("mat",), n=2, seeds=(0,), out="inline")
    assert sw.run_sweep(runs, tmp_path / "inline", jobs=1, execute=FAKE, progress=False).complete
    assert _results(tmp_path / "sub") == _results(tmp_path / "inline")


def test_slurm_without_submitit_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    data = _npz(tmp_path)
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    code = main(["sweep", "--data", str(data), "--out", str(tmp_path / "sw"), "--executor", "slurm", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "memaware[slurm]" in err
    assert not (tmp_path / "sw").exists()


def test_cli_dry_run_and_bad_flags(tmp_path, capsys):
    data = _npz(tmp_path)
    code = main(
        [
            "sweep",
            "--data",
            str(data),
            "--methods",
            "erm,mat",
            "--n-hparams",
            "2",
            "--seeds",
            "0,4",
            "--out",
            str(tmp_path / "sw"),
            "--dry-run",
            "--set",
            "epochs=5",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("10 runs") and "erm/comb1_seed4" in out and "epochs=5" in out
    assert not (tmp_path / "sw").exists()
    for bad in (["--methods", "erm,lff"], ["--seeds", "0"], ["--set", "lr"], ["--dataset", "waterbirds"]):
        src = [] if bad[0] == "--dataset" else ["--data", str(data)]
        assert _exit_code(["sweep", "--out", str(tmp_path / "x"), *src, *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err


def test_cli_two_datasets_in_one_sweep_and_their_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(schedule, "EXECUTE", FAKE)
    a, b = _npz(tmp_path, "alpha"), _npz(tmp_path, "beta")
    argv = ["sweep", "--data", str(a), str(b), "--methods", "erm,mat", "--n-hparams", "2", "--seeds", "2"]
    assert main([*argv, "--set", "epochs=2", "--jobs", "1", "--out", str(tmp_path / "sw")]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "sw" / "beta" / "mat" / "comb1_seed1" / "results.json").is_file()
    assert main(["table", "--sweep", str(tmp_path / "sw"), "--selection", "va_gi_wga", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "| alpha Avg | alpha Worst | beta Avg | beta Worst |" in out and "| ✗ | ~ | MAT |" in out
    assert "| XRM |" not in out  # XRM ran only to give ERM inferred groups: no row


def test_cli_sweep_over_a_real_dataset_layout(tmp_path, capsys):
    """--dataset NAME --data-dir DIR with the real runner: a tiny Waterbirds layout, end to end, two epochs."""
    import layout_fixtures

    layout_fixtures.make_waterbirds(tmp_path / "data")
    argv = ["sweep", "--dataset", "Waterbirds", "--data-dir", str(tmp_path / "data"), "--methods", "groupdro"]
    argv += ["--n-hparams", "1", "--seeds", "1", "--set", "epochs=2", "--jobs", "1", "--out", str(tmp_path / "sw")]
    assert main([*argv, "--image-size", "16"]) == 0
    spec = json.loads((tmp_path / "sw" / "groupdro" / "comb0_seed0" / "spec.json").read_text())
    assert spec["dataset"] == "waterbirds" and spec["hparams"]["momentum"] == 0.9  # the image family
    assert spec["image_size"] == 16 and "max_length" not in spec  # data options reach the runner
    assert (tmp_path / "sw" / "groupdro" / "comb0_seed0" / "results.json").is_file()
    capsys.readouterr()
    assert main(["table", "--sweep", str(tmp_path / "sw"), "--no-plot"]) == 0
    assert "| ✓ | ✓ | GroupDRO |" in capsys.readouterr().out
    assert main([*argv[:3], str(tmp_path), *argv[5:]]) == 2  # no Waterbirds layout there: one line, before any run
    npz = tmp_path / "f.npz"
    np.savez(npz, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), split=np.array([0, 0, 1, 2]), a=np.zeros(4, int))
    bad = ["sweep", "--data", str(npz), "--max-length", "64", "--out", str(tmp_path / "sw2")]
    assert _exit_code(bad) == 2 and "go with --dataset" in capsys.readouterr().err  # a features file has no texts
    assert _exit_code([*argv, "--image-size", "0"]) == 2  # a side of 0 pixels is refused by the parser


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors
        return int(e.code)


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _sweep_cmd(data: Path, out: Path, runner: str | None, *extra: str) -> list[str]:
    argv = ["sweep", "--data", str(data), "--out", str(out), "--quiet", *extra]
    code = "import sys\n"
    if runner:
        code += f"sys.path.insert(0, {TESTS!r})\nimport memaware.sweep.schedule as s\ns.EXECUTE = {runner!r}\n"
    code += f"from memaware.cli import main\nsys.exit(main({argv!r}))\n"
    return [sys.executable, "-c", code]


def _kill_mid_run(cmd: list[str], out: Path, env: dict, timeout: float = 60.0) -> bool:
    """Starts the sweep and SIGKILLs it once a run is finished and another has a checkpoint; checks that its pool
    workers die with it. False when the sweep ended before that moment (runs too short on this machine)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        seen: set[Path] = set()
        while time.monotonic() - t0 < timeout:
            done = {p.parent for p in out.rglob("results.json")}
            mid = {p.parent for p in out.rglob("checkpoint*.pt")} - done
            if done and mid & (seen - {p.parent for p in out.rglob("results.json")}):
                break  # the same run seen mid-way twice in a row
            seen = mid
            if proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
                return False
            time.sleep(0.01)
        else:
            pytest.fail("no run reached a checkpoint in time")
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "pool workers outlived the killed sweep"
    done = {p.parent for p in out.rglob("results.json")}
    return bool({p.parent for p in out.rglob("checkpoint*.pt")} - done)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MEMAWARE_FAKE_STEP_S": "0.02"}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_sigkill_then_rerun_equals_uninterrupted_sweep(tmp_path):
    """The same as the real-runner test below with a stand-in runner (about 30 s: three sweep processes)."""
    data = _npz(tmp_path)
    flags = ["--methods", "erm,mat", "--n-hparams", "1", "--seeds", "2", "--set", "epochs=40", "--jobs", "2"]
    assert _kill_mid_run(_sweep_cmd(data, tmp_path / "killed", FAKE, *flags), tmp_path / "killed", _env())
    assert subprocess.run(_sweep_cmd(data, tmp_path / "killed", FAKE, *flags), env=_env()).returncode == 0
    resumed = [json.loads(p.read_text())["resumed_from"] for p in (tmp_path / "killed").rglob("results.json")]
    assert any(r > 0 for r in resumed)  # a killed run went on from its checkpoint
    runs = _plan(tmp_path, methods=("erm", "mat"), n=1, seeds=(0, 1), out="straight")
    for r in runs:
        r.spec["hparams"]["epochs"] = 40
    assert sw.run_sweep(runs, tmp_path / "straight", jobs=1, execute=FAKE, progress=False).complete
    killed, straight = _results(tmp_path / "killed"), _results(tmp_path / "straight")
    assert len(killed) == 6 and killed == straight


def _has_runner() -> bool:
    try:
        from memaware.sweep import runner  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_runner() or not Path("/proc/self/task").is_dir(), reason="needs memaware.sweep.runner")
def test_real_runs_sigkill_then_rerun_equal_uninterrupted(tmp_path):
    """`memaware sweep` (a pool of 2) is SIGKILLed once a run has finished and another has a checkpoint; its workers
    die with it; the re-run (here in this process) resumes; every results.json equals a straight sweep's."""
    from memaware.threads import use_one_intraop_thread

    use_one_intraop_thread()  # as in the pool workers, so that numbers can be compared exactly
    path = tmp_path / "toy.npz"
    make_setup21(n_train=200, n_val=100, n_test=100, noise_dim=300, seed=1).save_npz(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for epochs in (100, 400, 1600):  # longer runs where this machine finished the sweep before the kill
        flags = ["--methods", "erm", "--seeds", "1", "--n-hparams", "1", "--set", f"epochs={epochs}"]
        flags += ["--checkpoint-every", "1", "--jobs", "2"]
        shutil.rmtree(tmp_path / "killed", ignore_errors=True)
        if _kill_mid_run(_sweep_cmd(path, tmp_path / "killed", None, *flags), tmp_path / "killed", env, 120):
            break
    else:
        pytest.fail("could not kill the sweep mid-run")
    src = [sw.DataSource.from_npz(path)]
    for out, every in (("killed", 1), ("straight", None)):  # straight: the runner's default checkpointing
        runs = sw.plan_sweep(src, ["erm"], 1, [0], tmp_path / out, fixed={"epochs": epochs}, checkpoint_every=every)
        summary = sw.run_sweep(runs, tmp_path / out, jobs=1, progress=False)
        assert summary.complete and (summary.already_done > 0) == (out == "killed")
    killed, straight = _results(tmp_path / "killed"), _results(tmp_path / "straight")
    assert len(killed) == 2 and killed.keys() == straight.keys()
    resumed = [json.loads(p.read_text())["resumed_from"] for p in (tmp_path / "killed").rglob("results.json")]
    assert any(r for r in resumed), resumed  # a killed run went on from its checkpoint
    for k in killed:
        assert killed[k] == straight[k], k

