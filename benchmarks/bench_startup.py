"""Start-up time of the `memaware` command: `memaware train --help` and a bad-path error
(`memaware train --data nope.npz --method erm`) against `python -c "import torch"`, measured side by side, in
interleaved rounds (so that a busy moment of a shared machine hits every command alike), whole processes.

Usage: python benchmarks/bench_startup.py [--repeats 5]
Prints each command's median and best wall time in seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

MEMAWARE = [sys.executable, "-m", "memaware"]
COMMANDS = {
    "memaware train --help": [*MEMAWARE, "train", "--help"],
    "memaware train --data nope.npz --method erm": [*MEMAWARE, "train", "--data", "nope.npz", "--method", "erm",
                                                    "--out", "out"],  # fmt: skip
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def wall(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        for cmd in COMMANDS.values():  # one warm-up each: the file cache, not the interpreter, is warmed
            wall(cmd, cwd)
        for _ in range(args.repeats):
            for name, cmd in COMMANDS.items():
                times[name].append(wall(cmd, cwd))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.repeats} rounds")
    for name, ts in times.items():
        print(f"{name:<48} median {statistics.median(ts):.3f} s   best {min(ts):.3f} s")


if __name__ == "__main__":
    main()
