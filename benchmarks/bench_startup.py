"""Start-up time of the `memaware` command: `memaware train --help` and a bad-path error
(`memaware train --data nope.npz --method erm`) against `python -c "import torch"`, measured side by side, in
interleaved rounds (so that a busy moment of a shared machine hits every command alike), whole processes.

Usage: python benchmarks/bench_startup.py [--repeats 5] [--before SRC]
Prints each command's median and best wall time in seconds. ``--before SRC`` adds the same two commands run from
another checkout's ``src`` folder (e.g. a `git worktree` of an earlier commit), in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from command_timing import print_times, time_rounds, wall

MEMAWARE = [sys.executable, "-m", "memaware"]
COMMANDS = {
    "memaware train --help": [*MEMAWARE, "train", "--help"],
    "memaware train --data nope.npz --method erm": [*MEMAWARE, *"train --data nope.npz --method erm --out o".split()],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", help="src folder of an earlier checkout, measured beside this one")
    args = parser.parse_args()
    commands = dict(COMMANDS)
    if args.before:
        env = f"PYTHONPATH={os.path.abspath(args.before)}"
        for name in list(COMMANDS)[:2]:
            commands[f"{name} (before)"] = ["env", env, *COMMANDS[name]]
    with tempfile.TemporaryDirectory() as cwd:
        for cmd in commands.values():  # one warm-up each: the file cache, not the interpreter, is warmed
            wall(cmd, cwd, check=False)
        times = time_rounds(commands, cwd, args.repeats, check=False)  # an argument error exits 2, by design
    print_times(times, args.repeats, width=57)


if __name__ == "__main__":
    main()
