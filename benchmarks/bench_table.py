"""Wall time of a whole `memaware table` run on a sweep directory: with its bar chart (the default) and with
``--no-plot``, in interleaved rounds (so that a busy moment of a shared machine hits every command alike), whole
processes. The table rescores every run's evaluations.npz.

Usage: python benchmarks/bench_table.py --sweep DIR [--repeats 5] [--before SRC]
Prints each command's median and best wall time in seconds. ``--before SRC`` adds the same commands run from another
checkout's ``src`` folder (e.g. a `git worktree` of an earlier commit), in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from command_timing import print_times, time_rounds, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="a sweep directory (memaware sweep --out)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", help="src folder of an earlier checkout, measured beside this one")
    args = parser.parse_args()
    sweep = os.path.abspath(args.sweep)
    with tempfile.TemporaryDirectory() as cwd:

        def table(name: str, plot: bool) -> list[str]:
            out = ["--out", os.path.join(cwd, f"{name}.md")]
            return [sys.executable, "-m", "memaware", "table", "--sweep", sweep, *out, *([] if plot else ["--no-plot"])]

        commands = {
            "memaware table (bar chart)": table("chart", True),
            "memaware table --no-plot": table("plain", False),
        }
        if args.before:
            env = ["env", f"PYTHONPATH={os.path.abspath(args.before)}"]
            commands["memaware table (bar chart) (before)"] = [*env, *table("chart_before", True)]
            commands["memaware table --no-plot (before)"] = [*env, *table("plain_before", False)]
        for cmd in commands.values():  # one warm-up each: the file cache, not the interpreter, is warmed
            wall(cmd, cwd)
        print_times(time_rounds(commands, cwd, args.repeats), args.repeats)


if __name__ == "__main__":
    main()
