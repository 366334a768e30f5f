"""Whole-process wall time of `memaware fig1` and `memaware fig3 --seed 123`, optionally beside the authors' own
Fig. 1 / Fig. 3 scripts (facebookresearch/Pitfalls-of-Memorization: interpretable_experiment.py and
good_bad_ugly_memorization.py, run unchanged from a folder you give; nothing of theirs is in this repository) and
beside an earlier memaware checkout, in interleaved rounds so that a busy moment of a shared machine hits every
command alike.

Usage: python benchmarks/bench_figures.py [--repeats 2] [--authors DIR] [--before SRC] [--only fig1|fig3]
Prints each command's best and median wall time in seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def wall(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def commands(args: argparse.Namespace, out: str) -> dict[str, list[str]]:
    py, figs = sys.executable, [args.only] if args.only else ["fig1", "fig3"]
    mine = {"fig1": ["fig1", "--quiet"], "fig3": ["fig3", "--seed", "123", "--quiet"]}
    theirs = {"fig1": "interpretable_experiment.py", "fig3": "good_bad_ugly_memorization.py"}
    cmds: dict[str, list[str]] = {}
    for fig in figs:
        cmds[f"memaware {fig}"] = [py, "-m", "memaware", *mine[fig], "--out", os.path.join(out, fig)]
        if args.before:
            env = f"PYTHONPATH={os.path.abspath(args.before)}"
            cmds[f"memaware {fig} (before)"] = ["env", env, *cmds[f"memaware {fig}"]]
        if args.authors:
            cmds[f"authors' {theirs[fig]}"] = [py, os.path.join(os.path.abspath(args.authors), theirs[fig])]
    return cmds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--authors", help="folder holding the authors' two scripts (run from a temporary folder)")
    parser.add_argument("--before", help="src folder of an earlier memaware checkout, measured beside this one")
    parser.add_argument("--only", choices=("fig1", "fig3"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        cmds = commands(args, cwd)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                times[name].append(wall(cmd, cwd))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.repeats} rounds")
    for name, ts in times.items():
        print(f"{name:<48} best {min(ts):6.2f} s   median {statistics.median(ts):6.2f} s")


if __name__ == "__main__":
    main()
