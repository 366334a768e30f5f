"""Wall time of `memaware fig1` at its defaults (3 runs x 1000 epochs, MAT two-phase), start-up included.

Usage: python benchmarks/bench_fig1.py [--repeats 5]
Prints the wall time of each repeat of the whole command (a fresh process each time: python + torch import,
data, training, figure, JSON) and the in-process training seconds reported in fig1.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    walls, trains = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "memaware", "fig1", "--out", out, "--quiet"], check=True)
            walls.append(time.perf_counter() - t0)
            with open(os.path.join(out, "fig1.json")) as f:
                trains.append(json.load(f)["seconds"])
    print(f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}")
    print(
        "wall s (whole command): "
        + ", ".join(f"{w:.2f}" for w in walls)
        + f"  median {statistics.median(walls):.2f}  min {min(walls):.2f}"
    )
    print(
        "training s (3 runs, in process): "
        + ", ".join(f"{t:.2f}" for t in trains)
        + f"  median {statistics.median(trains):.2f}"
    )


if __name__ == "__main__":
    main()
