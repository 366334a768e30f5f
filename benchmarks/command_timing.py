"""Wall-clock timing of whole commands, side by side in rounds (shared by bench_startup.py and bench_figures.py)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time


def wall(cmd: list[str], cwd: str, check: bool = True) -> float:
    """Seconds ``cmd`` takes, run in ``cwd`` with its output discarded (``check``: a failure raises)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=check)
    return time.perf_counter() - t0


def time_rounds(commands: dict[str, list[str]], cwd: str, repeats: int, check: bool = True) -> dict[str, list[float]]:
    """{name: seconds of each round}: every command once per round, so that all see the same load in turn."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            times[name].append(wall(cmd, cwd, check))
    return times


def print_times(times: dict[str, list[float]], repeats: int, width: int = 48) -> None:
    """One line per command (best and median), after the load average the rounds ran under."""
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {repeats} rounds")
    for name, ts in times.items():
        print(f"{name:<{width}} best {min(ts):6.3f} s   median {statistics.median(ts):6.3f} s")
