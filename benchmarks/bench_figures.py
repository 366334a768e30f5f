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
import sys
import tempfile

from command_timing import print_times, time_rounds


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
        times = time_rounds(commands(args, cwd), cwd, args.repeats)
    print_times(times, args.repeats)


if __name__ == "__main__":
    main()
