"""Wall time of `memaware fig3` (three runs to train MSE < 1e-6) against a plain-PyTorch reference loop.

Usage: python benchmarks/bench_fig3.py [--repeats 3] [--seed 0]

The reference is the straightforward way to write the authors' procedure: nn.Sequential(Linear, Tanh, ...),
torch.optim.Adam(lr=1e-3), a full-batch step, `loss.item()` checked against 1e-6 each step, one model after the
other, default threads. It runs in its own process (imports included, as a script would) on the same data
(memaware's Setup C.1 generator, same seed), so both sides take the same number of steps per run up to float noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REFERENCE = r"""
import sys, time
import torch
from torch import nn
from memaware.data.regression import make_setup_c1
seed = int(sys.argv[1])
steps = []
for sigma in (1e-4, 1e-3, 0.0):
    p = make_setup_c1(sigma=sigma, seed=seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(31, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    step = 0
    while True:
        loss = (net(p.x_train)[:, 0] - p.y_train).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if loss.item() < 1e-6 or step >= 100_000:
            break
    steps.append(step)
print(steps)
"""


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ours, ref = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            w, _ = timed([sys.executable, "-m", "memaware", "fig3", "--out", out, "--seed", str(args.seed)])
            ours.append(w)
        w, steps = timed([sys.executable, "-c", REFERENCE, str(args.seed)])
        ref.append(w)
    print(f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  seed: {args.seed}")
    print(f"memaware fig3 (wall, whole command): {', '.join(f'{t:.2f}' for t in ours)}  "
          f"median {statistics.median(ours):.2f} s")
    print(f"plain PyTorch reference (wall, whole script, steps {steps.strip()}): "
          f"{', '.join(f'{t:.2f}' for t in ref)}  median {statistics.median(ref):.2f} s")


if __name__ == "__main__":
    main()
