"""MAT (both phases) on features the size of Waterbirds' ResNet-50 embeddings: memaware's loop vs the plain
PyTorch loop a paper codebase writes (DataLoader over a TensorDataset, per-example indexing and collation).

Sizes: 4,795 train / 1,199 val / 5,794 test rows x 2,048 dims (Waterbirds), batch 128, 1,001 optimiser steps per
phase, Adam (lr 1e-3, weight decay 1e-4), linear heads, validation and test evaluated once per epoch in both.
The data are Gaussian with a planted core and spurious direction (only the speed is measured here).

Usage: python benchmarks/bench_mat_features.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

N_TRAIN, N_VAL, N_TEST, DIM, BATCH, STEPS = 4795, 1199, 5794, 2048, 128, 1001
LR, WD, TAU = 1e-3, 1e-4, 0.1


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


def run_memaware(data) -> float:
    from memaware.engine import TrainConfig, fit

    cfg = TrainConfig(
        epochs=10_000, max_steps=STEPS, lr=LR, weight_decay=WD, optimizer="adam", batch_size=BATCH, seed=0
    )
    t0 = time.perf_counter()
    fit(data, "mat", cfg, model_kwargs={"bias": True}, temperature=TAU)
    return time.perf_counter() - t0


def run_vectorized(data, path: str) -> float:
    """The same run through memaware.engine.many (one member: hand-written gradients, no autograd)."""
    from memaware.engine.many import train_many

    hp = {"epochs": 10_000, "max_steps": STEPS, "lr": LR, "weight_decay": WD, "optimizer": "adam",
          "batch_size": BATCH, "bias": True, "temperature": TAU}  # fmt: skip
    t0 = time.perf_counter()
    train_many(data, [{"method": "mat", "data": path, "seed": 0, "hparams": hp}])
    return time.perf_counter() - t0


def run_plain(data) -> float:
    """What a typical research codebase does: DataLoader batches, torch.optim.Adam, nn.Linear per net."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    tr, va, te = (data.split == s for s in (0, 1, 2))
    x_tr, y_tr, x_va, y_va, x_te, y_te = data.x[tr], data.y[tr], data.x[va], data.y[va], data.x[te], data.y[te]
    idx = torch.arange(len(y_tr))
    loader = DataLoader(TensorDataset(x_tr, y_tr, idx), batch_size=BATCH, shuffle=True)

    def evaluate(nets):
        with torch.no_grad():
            for x, y in ((x_va, y_va), (x_te, y_te)):
                for net in nets:
                    (net(x).argmax(1) == y).float().mean().item()

    t0 = time.perf_counter()
    # phase 1: XRM, two nets on random halves with label flipping
    nets = [torch.nn.Linear(DIM, 2) for _ in range(2)]
    opt = torch.optim.Adam([p for n in nets for p in n.parameters()], lr=LR, weight_decay=WD)
    hold = torch.randint(0, 2, (len(y_tr),))
    labels = y_tr.clone()
    step = 0
    while step < STEPS:
        for x, _, i in loader:
            out = torch.stack([net(x) for net in nets], 1)  # (b, 2, K)
            held_in = out[torch.arange(len(i)), hold[i]]
            held_out = out[torch.arange(len(i)), 1 - hold[i]]
            loss = sum(F.cross_entropy(held_in[labels[i] == k], labels[i][labels[i] == k]) for k in (0, 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                p_max, y_ho = held_out.softmax(1).max(1)
                flip = torch.rand(len(i)) < (p_max - 0.5) * 2
                labels[i] = torch.where(flip, y_ho, labels[i])
            step += 1
            if step >= STEPS:
                break
        evaluate(nets)
    with torch.no_grad():
        out = torch.stack([net(x_tr) for net in nets], 1)
        heldout = out[torch.arange(len(y_tr)), 1 - hold]
        p = (heldout / TAU).softmax(1)
        joint = p.t() @ F.one_hot(y_tr, 2).float()
        shift = torch.log(p @ (joint / joint.sum(1, keepdim=True)) + 1e-6)
    # phase 2: MAT
    net = torch.nn.Linear(DIM, 2)
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WD)
    step = 0
    while step < STEPS:
        for x, y, i in loader:
            loss = F.cross_entropy(net(x) + shift[i], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= STEPS:
                break
        evaluate([net])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = make_data()
    examples = 2 * STEPS * BATCH  # both phases
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wb.npz")
        data.save_npz(path)
        vec = [run_vectorized(data, path) for _ in range(args.repeats)]
    ours = [run_memaware(data) for _ in range(args.repeats)]
    plain = [run_plain(data) for _ in range(args.repeats)]
    print(f"cores: {os.cpu_count()}  torch threads: {args.threads}  python: {sys.version.split()[0]}")
    rows = (("memaware fit (mat)", ours), ("memaware train_many", vec), ("plain DataLoader loop", plain))
    for name, times in rows:
        med = statistics.median(times)
        print(
            f"{name:<22} s: " + ", ".join(f"{t:.2f}" for t in times)
            + f"  median {med:.2f}  ({examples / med:,.0f} examples/s)"
        )  # fmt: skip
    for name, times in rows[:2]:
        print(f"speed-up of {name} (median): {statistics.median(plain) / statistics.median(times):.1f}x")


if __name__ == "__main__":
    main()
