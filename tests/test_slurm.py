"""`memaware sweep --executor slurm` on a real single-node Slurm cluster (Debian's slurm-wlm + munge), brought up by
scripts/slurm_cluster.sh at the start of this module (installed with apt-get when missing). These tests are never
skipped silently: if the cluster cannot be brought up they fail, with the script's message. (A developer without
root may opt out explicitly with MEMAWARE_SKIP_SLURM=1; CI does not.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memaware.data.synthetic import make_setup21

REPO = Path(__file__).resolve().parents[1]
TESTS = str(Path(__file__).resolve().parent)
SLOW = "slurm_methods:SlowERM"


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster; returns (node name, CPUs, memory MB) as sinfo reports them."""
    if os.environ.get("MEMAWARE_SKIP_SLURM") == "1":
        pytest.skip("MEMAWARE_SKIP_SLURM=1: the Slurm tests were switched off explicitly")
    t0 = time.perf_counter()
    out = subprocess.run([str(REPO / "scripts" / "slurm_cluster.sh"), "up"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"could not bring up the Slurm cluster: {out.stderr.strip() or out.stdout.strip()}", False)
    print(f"\nslurm cluster set-up: {time.perf_counter() - t0:.1f} s ({out.stdout.strip()})")
    line = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %c %m"], capture_output=True, text=True).stdout.split()
    return line[0], int(line[1]), int(line[2])


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "toy.npz"
    make_setup21(n_train=100, n_val=60, n_test=60, noise_dim=40, seed=0).save_npz(path)
    return path


def _sweep(data: Path, out: Path, *extra: str, slow_step_s: float = 0.0, background: bool = False):
    cmd = [sys.executable, "-m", "memaware", "sweep", "--data", str(data), "--out", str(out), "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": TESTS, "MEMAWARE_SLOW_STEP_S": str(slow_step_s), "OMP_NUM_THREADS": "1"}
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


SLURM = ("--executor", "slurm", "--cpus", "1", "--mem-gb", "1", "--poll-s", "1")


def _results(root: Path) -> dict[str, dict]:
    """run dir -> results.json without what may differ between executions (time, where it resumed, the root)."""
    out = {}
    for p in sorted(root.rglob("results.json")):
        text = p.read_text().replace(str(root.resolve()), "ROOT")
        res = json.loads(text)
        res.pop("seconds"), res.pop("resumed_from")
        out[p.parent.relative_to(root).as_posix()] = res
    return out


def _job_ids(out: Path) -> list[str]:
    return [p.name.removesuffix("_submitted.pkl") for p in (out / "submitit").glob("*_submitted.pkl")]


def test_slurm_results_equal_local_run_for_run(cluster, tmp_path):
    data = _data(tmp_path)
    args = ("--methods", "erm,xrm", "--n-hparams", "2", "--seeds", "1", "--set", "epochs=15")
    local = _sweep(data, tmp_path / "local", *args, "--jobs", "1")
    assert local.returncode == 0, local.stderr
    t0 = time.perf_counter()
    slurm = _sweep(data, tmp_path / "slurm", *args, *SLURM)
    assert slurm.returncode == 0, slurm.stderr
    a, b = _results(tmp_path / "local"), _results(tmp_path / "slurm")
    assert len(a) == 4 and a == b  # xrm comb0/1, erm comb0/1 (erm selected with the xrm run's inferred groups)
    assert _job_ids(tmp_path / "slurm"), "no job went through Slurm"
    print(f"slurm sweep of 4 runs: {time.perf_counter() - t0:.1f} s")


def _release_requeued(out: Path, stop: threading.Event) -> None:
    """Slurm holds a requeued job for 120 s (reason BeginTime) before it may start again; on a one-node test
    cluster that is only waiting, so the hold is lifted as soon as it appears."""
    while not stop.wait(1.0):
        ids = _job_ids(out)
        if not ids:
            continue
        q = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %r"], capture_output=True, text=True)
        for line in q.stdout.splitlines():
            job, _, reason = line.partition(" ")
            if reason.strip() == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)


def test_time_limit_requeues_and_resumes_with_identical_numbers(cluster, tmp_path):
    """A run needing 65 s under a one-minute limit: Slurm signals the job before its limit, submitit checkpoints and
    requeues it, and the run resumes from its own checkpoint, ending with the numbers of an uninterrupted run."""
    data = _data(tmp_path)
    args = ("--methods", SLOW, "--n-hparams", "1", "--seeds", "1", "--no-inferred-groups",
            "--set", "epochs=130", "--checkpoint-every", "5")  # fmt: skip
    local = _sweep(data, tmp_path / "local", *args, "--jobs", "1")
    assert local.returncode == 0, local.stderr
    stop = threading.Event()
    helper = threading.Thread(target=_release_requeued, args=(tmp_path / "slurm", stop), daemon=True)
    helper.start()
    t0 = time.perf_counter()
    try:
        limit = ("--time-min", "1", "--max-requeues", "30")  # each attempt gets 15-45 s: a loaded machine may need many
        slurm = _sweep(data, tmp_path / "slurm", *args, *SLURM, *limit, slow_step_s=0.5)
    finally:
        stop.set()
        helper.join()
    seconds = time.perf_counter() - t0
    assert slurm.returncode == 0, slurm.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "slurm" / "submitit").glob("*_log.*"))
    assert "Requeued job" in logs, "the job never reached its time limit"
    res = json.loads(next((tmp_path / "slurm").rglob("results.json")).read_text())
    assert res["resumed_from"], "the requeued job did not resume from its checkpoint"
    assert _results(tmp_path / "local") == _results(tmp_path / "slurm")
    print(f"time-limited run: {logs.count('Requeued job')} requeue(s), {seconds:.0f} s")


def test_scancel_is_reported_with_its_reason_and_a_rerun_finishes(cluster, tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "sw"
    args = ("--methods", SLOW, "--n-hparams", "1", "--seeds", "1", "--no-inferred-groups", "--set", "epochs=120")
    proc = _sweep(data, out, *args, *SLURM, slow_step_s=0.5, background=True)
    deadline = time.monotonic() + 120
    running = None
    while running is None and time.monotonic() < deadline:
        ids = _job_ids(out)
        if ids:
            q = subprocess.run(["squeue", "-h", "-r", "-j", ids[0], "-o", "%i %T"], capture_output=True, text=True)
            running = ids[0] if "RUNNING" in q.stdout else None
        time.sleep(0.5)
    assert running, "the job never started"
    subprocess.run(["scancel", running], check=True)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    line = next(ln for ln in stderr.splitlines() if "failed" in ln)
    assert re.search(rf"job {running} ended CANCELLED", line) and "comb0_seed0" in line, stderr
    assert not list(out.rglob("results.json"))
    again = _sweep(data, out, *args, *SLURM)
    assert again.returncode == 0, again.stderr
    assert len(list(out.rglob("results.json"))) == 1


@pytest.mark.parametrize(
    "request_args",
    [
        ("--cpus", "4096", "--mem-gb", "1"),
        ("--cpus", "1", "--mem-gb", "100000"),
        ("--cpus", "1", "--mem-gb", "1", "--gpus", "8"),
    ],
)
def test_a_request_no_node_can_satisfy_is_refused_within_seconds(cluster, tmp_path, request_args):
    node, cpus, mem_mb = cluster
    data = _data(tmp_path)
    t0 = time.perf_counter()
    res = _sweep(data, tmp_path / "sw", "--methods", "erm", "--n-hparams", "1", "--seeds", "1", "--executor", "slurm",
                 *request_args)  # fmt: skip
    seconds = time.perf_counter() - t0
    assert res.returncode == 2 and seconds < 20  # the import of torch, then sinfo: no job is ever submitted
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert " ".join(request_args[:2]) in lines[0]
    assert f"largest node: {node} with {cpus} CPUs, {mem_mb / 1024:.1f} GB, 0 GPUs" in lines[0]
    assert not (tmp_path / "sw").exists()  # nothing submitted, nothing written


def test_unknown_partition_is_one_line(cluster, tmp_path):
    res = _sweep(_data(tmp_path), tmp_path / "sw", "--methods", "erm", "--executor", "slurm", "--partition", "nope")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--partition nope: no such partition" in res.stderr


def test_cluster_tools_are_real(cluster):
    """Guards against a stand-in: the tests above ran against real Slurm daemons."""
    assert shutil.which("slurmctld") and shutil.which("sbatch")
    assert subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") >= 1
