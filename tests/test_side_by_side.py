"""``threads.run_side_by_side``: independent trainings in forked worker processes (or threads where forking is not
safe), results in item order and equal to running them one by one, a worker's error raised in the caller."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from memaware import threads
from memaware.errors import ConfigError

SCRIPT = textwrap.dedent(
    """
    import json, os, torch
    from memaware.threads import can_fork, run_side_by_side, use_one_intraop_thread
    from memaware.data.regression import make_setup_c1
    from memaware.experiments.fig3 import train_problems

    use_one_intraop_thread()
    def train(sigma):
        row = train_problems([make_setup_c1(n=8, noise_dim=4, sigma=sigma, seed=5)], [5], hidden=(16,), lr=1e-2,
                             max_steps=300, target_mse=1e-3)[0]
        return os.getpid(), row["steps"], row["train_mse"]
    sigmas = [0.0, 0.1, 0.3]
    calls = []
    from tqdm import tqdm
    list(tqdm(range(2), disable=True))  # an earlier progress bar: tqdm's monitor thread runs
    fork = can_fork()
    side = run_side_by_side(train, sigmas, 2, meanwhile=lambda: calls.append(os.getpid()))
    alone = [train(s) for s in sigmas]
    out = {"fork": fork, "fork_after": can_fork(), "parent": os.getpid(), "side": side, "alone": alone}
    print(json.dumps({**out, "calls": calls}))
    """
)


def test_forked_workers_give_the_results_of_runs_alone():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["fork"] is False  # tqdm's monitor thread: run_side_by_side stops it before forking
    assert out["fork_after"] is True  # and a quiet training leaves no thread behind
    assert out["calls"] == [out["parent"]]  # meanwhile ran once, in the caller
    pids = {pid for pid, _, _ in out["side"]}
    assert out["parent"] not in pids and len(pids) == 3  # one worker process per item
    assert [r[1:] for r in out["side"]] == [r[1:] for r in out["alone"]]  # same steps and MSE, in item order


def _fail(item):
    if item == 2:
        raise ConfigError(f"bad item {item}")
    return item * 10


@pytest.mark.parametrize("fork", [True, False])
def test_a_worker_error_is_raised_in_the_caller(monkeypatch, fork):
    monkeypatch.setattr(threads, "can_fork", lambda: fork)
    monkeypatch.setattr(threads, "worker_count", lambda n: max(1, n))
    assert threads.run_side_by_side(_fail, [3, 1, 0], 2) == [30, 10, 0]
    with pytest.raises(ConfigError, match="bad item 2"):
        threads.run_side_by_side(_fail, [1, 2, 3], 2)


def test_a_worker_that_dies_is_an_error(monkeypatch):
    monkeypatch.setattr(threads, "can_fork", lambda: True)
    monkeypatch.setattr(threads, "worker_count", lambda n: max(1, n))
    with pytest.raises(RuntimeError, match="died without a result"):
        threads.run_side_by_side(lambda item: os._exit(3), [1, 2], 2)
