"""``vectorized.train_many`` (every run of a sweep group as members of one batched program: the engine's batched mode,
each method's fast path) vs ``runner.execute`` one run at a time, on features the size of a small image-embedding
problem. Both give the same runs (the last line counts identical selected test reports).

Sizes: 5,000 train / 1,000 val / 2,000 test rows x 784 dims, batch 128 (40 steps per epoch; ``--batch-size 0``:
full batch), ``--epochs`` epochs, linear head with bias, Adam (``--optimizer``); ``--combos`` hyper-parameter
combinations (lr log10 U(-4, -2) for Adam, U(-3, -1) for SGD, weight decay log10 U(-6, -3), plus the method's own:
MAT temperature, GroupDRO eta, JTT T / lambda_up) x ``--seeds`` seeds, all evaluated on validation and test every
epoch. The data are Gaussian with a planted core and spurious direction (95% of training examples have a = y).
One torch thread.

Usage: python benchmarks/bench_vectorized.py [--method erm] [--epochs 20] [--combos 10] [--seeds 3] [--repeats 1]
       [--batch-size 128] [--optimizer adam]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

N_TRAIN, N_VAL, N_TEST, DIM, BATCH = 5000, 1000, 2000, 784, 128


def make_data(seed: int = 0):
    from memaware.data import GroupData

    g = torch.Generator().manual_seed(seed)
    n = N_TRAIN + N_VAL + N_TEST
    split = torch.cat([torch.zeros(N_TRAIN), torch.ones(N_VAL), torch.full((N_TEST,), 2)]).long()
    y = torch.randint(0, 2, (n,), generator=g)
    agree = torch.where(split == 0, torch.rand(n, generator=g) < 0.95, torch.rand(n, generator=g) < 0.5)
    a = torch.where(agree, y, 1 - y)
    x = torch.randn(n, DIM, generator=g)
    x[:, 0] += 1.0 * (2 * y - 1)
    x[:, 1] += 2.0 * (2 * a - 1)
    return GroupData.from_arrays(x, y, split, a)


def make_specs(
    method: str, path: str, epochs: int, combos: int, seeds: int, batch_size: int = BATCH, optimizer: str = "adam"
) -> list[dict]:
    rng = np.random.default_rng(0)
    specs = []
    for _ in range(combos):
        hp = {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "lr": float(10 ** rng.uniform(-4, -2) if optimizer != "sgd" else 10 ** rng.uniform(-3, -1)),
            "weight_decay": float(10 ** rng.uniform(-6, -3)),
        }
        if method == "mat":
            hp["temperature"] = float(rng.choice([0.001, 0.01, 0.1]))
        elif method == "groupdro":
            hp["eta"] = float(10 ** rng.uniform(-3, -1))
        elif method == "jtt":
            hp["T"] = max(1, round(epochs * float(10 ** rng.uniform(np.log10(0.02), np.log10(0.5)))))
            hp["lambda_up"] = int(rng.choice([5, 10, 20, 50, 100]))
        specs += [{"method": method, "data": path, "seed": s, "hparams": dict(hp)} for s in range(seeds)]
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="erm")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--combos", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=BATCH, help="0: full batch")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    parser.add_argument("--skip-one-by-one", action="store_true", help="time train_many only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from memaware.engine.many import train_many
    from memaware.sweep.runner import execute

    data = make_data()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "features.npz")
        data.save_npz(path)
        specs = make_specs(args.method, path, args.epochs, args.combos, args.seeds, args.batch_size, args.optimizer)
        vec_times, one_times = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            vec = train_many(data, specs)
            vec_times.append(time.perf_counter() - t0)
            if args.skip_one_by_one:
                continue
            t0 = time.perf_counter()
            one = [execute(s, os.path.join(tmp, f"r{r}", f"run{i}")) for i, s in enumerate(specs)]
            one_times.append(time.perf_counter() - t0)
    print(f"cores: {os.cpu_count()}  torch threads: 1  python: {sys.version.split()[0]}  torch: {torch.__version__}")
    bs = args.batch_size or N_TRAIN
    print(
        f"{args.method}: {len(specs)} runs ({args.combos} combos x {args.seeds} seeds), {N_TRAIN} x {DIM} train, "
        f"batch {bs}, {args.optimizer}, {args.epochs} epochs ({args.epochs * -(-N_TRAIN // bs)} steps per run; "
        "SUBG: fewer, on its subset; JTT and MAT: plus their first phase)"
    )
    print("train_many (one program)  s: " + ", ".join(f"{t:.2f}" for t in vec_times))
    if one_times:
        print("runner.execute one by one s: " + ", ".join(f"{t:.2f}" for t in one_times))
        print(f"speed-up (median): {statistics.median(one_times) / statistics.median(vec_times):.1f}x")
        pairs = list(zip(vec, one, strict=True))
        same = sum(v["test"] == o["test"] and v["selected_epoch"] == o["selected_epoch"] for v, o in pairs)
        diff = [abs(v["test"]["worst_group_acc"] - o["test"]["worst_group_acc"]) for v, o in pairs]
        print(f"identical selected test reports: {same}/{len(specs)}; max |test wga difference|: {max(diff):.4f}")


if __name__ == "__main__":
    main()
