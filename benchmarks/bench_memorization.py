"""Memorization audit benchmarks: Setup 2.1 gaps (ERM vs MAT), estimator validation against ground truths,
and speed for 5,000 examples x 2,048-dim features with a linear head.

Usage: python benchmarks/bench_memorization.py {gaps,validate,speed,all} [--seeds 3] [--out DIR]
Prints one line per measurement; results are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from memaware.data import GroupData, make_setup21
from memaware.engine import TrainConfig
from memaware.memorization import estimate, fit_logistic, loo_margins, self_influence, split_half_reliability
from memaware.memorization.fitting import train_full_models
from memaware.memorization.subsample import held_in_minus_out, subsample_probs
from memaware.memorization.trak_adapter import traker_available, traker_self_influence


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda v: np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)  # noqa: E731
    return pearson(rank(a), rank(b))


def label_noise_data(n: int = 500, d: int = 20, flip: float = 0.1, seed: int = 0) -> GroupData:
    """Two Gaussian classes split by x_0 + x_1 (+ N(0, 0.3^2)), a fraction ``flip`` of labels flipped (a = 1 marks
    them); 60 / 20 / 20 % train / val / test. A small problem whose memorization varies continuously."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = ((x[:, 0] + x[:, 1] + 0.3 * torch.randn(n, generator=g)) > 0).long()
    flipped = torch.rand(n, generator=g) < flip
    y = torch.where(flipped, 1 - y, y)
    split = torch.zeros(n, dtype=torch.int8)
    split[: n // 5], split[n // 5 : 2 * n // 5] = 1, 2
    return GroupData.from_arrays(x, y, split[torch.randperm(n, generator=g)], flipped.long())


def gaps(seeds: int, out: Path | None, only: list[str] | None = None) -> None:
    """Minority minus majority mean score, ERM vs MAT, on Setup 2.1 (sigma = 0.5), several seeds."""
    from memaware.experiments.memorization import run_audit

    runs = [("subsample", 1000, {}), ("subsample", 2000, {}), ("newton", 1000, {"weight_decay": 1e-3}),
            ("loo", 1000, {"weight_decay": 1e-3}), ("trak", 1000, {})]
    for est, n, extra in runs:
        if only and f"{est}:{n}" not in only and est not in only:
            continue
        red = []
        for seed in range(seeds):
            data = make_setup21(n_train=n, seed=seed)
            cfg = TrainConfig(epochs=1000, lr=1e-2, seed=seed, selection="last", **extra)
            dest = (out / f"{est}_n{n}_seed{seed}") if out else _tmp()
            t0 = time.perf_counter()
            res = run_audit(data, ("erm", "mat"), est, cfg, dest, "setup21")
            ch = res["audit"]["gap_change"]
            red.append(ch["reduction"])
            print(f"gaps {est:<9} n_train={n} seed={seed}: ERM gap {ch['erm_gap']:+.3f}  MAT gap {ch['mat_gap']:+.3f}"
                  f"  reduction {ch['reduction']:.0%}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"gaps {est:<9} n_train={n}: mean reduction {np.mean(red):.0%} over {seeds} seeds", flush=True)


def _tmp() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="memaware-bench-"))


def validate() -> None:
    """Each estimator against its own ground truth on a small problem, beside the 1 - p(y|x) baseline."""
    # 1. Newton step and influence function vs exact leave-one-out, L2-logistic head
    data = make_setup21(n_train=400, noise_dim=200, seed=0)
    idx = data.indices(0)
    x, y = data.x[idx], data.y[idx]
    head = fit_logistic(x, y, weight_decay=1e-2)
    res = {e: loo_margins(head, x, y, e) for e in ("loo", "newton", "influence")}
    ref = res["loo"]["score"]
    print(f"validate newton-vs-loo (Setup 2.1 n=400 d=202, wd=1e-2): Pearson {pearson(res['newton']['score'], ref):.4f}"
          f"  influence {pearson(res['influence']['score'], ref):.4f}"
          f"  1-p baseline {pearson(1 - res['loo']['p_true'], ref):.4f}", flush=True)

    # 2. subsample split-half reliability at K = 400 (linear head on Setup 2.1; MLP on label-noise data)
    mlp = label_noise_data()
    mlp_cfg = TrainConfig(epochs=300, lr=1e-2, optimizer="adam", selection="last")
    mk = {"hidden": (32,), "bias": True}
    small = make_setup21(n_train=400, noise_dim=400, seed=0)
    lin_cfg = TrainConfig(epochs=1000, lr=1e-2, selection="last")
    problems = (("linear Setup 2.1 n=400 d=402", small, lin_cfg, {}), ("MLP label-noise", mlp, mlp_cfg, mk))
    for name, d, cfg, kw in problems:
        t0 = time.perf_counter()
        probs, masks = subsample_probs(d, "erm", cfg, 400, kw)
        rel = split_half_reliability(probs, masks)
        g = d.y[d.indices(0)] * d.num_attrs + d.a[d.indices(0)]
        within = []
        for gid in torch.unique(g):  # reliability inside each group (the between-group spread removed)
            keep = g == gid
            if int(keep.sum()) >= 20:
                within.append(split_half_reliability(probs[:, keep], masks[:, keep])["spearman_brown"])
        print(f"validate subsample split-half K=400 ({name}): halves r {rel['pearson_halves']:.4f}, Spearman-Brown "
              f"{rel['spearman_brown']:.4f}; within groups min {min(within):.3f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        if name.startswith("MLP"):
            ref_probs, ref_masks = probs, masks

    # 3. trak (M = 10) vs the K = 400 subsample reference, small MLP
    x, y = mlp.x[mlp.indices(0)], mlp.y[mlp.indices(0)]
    ref = held_in_minus_out(ref_probs, ref_masks)["score"]
    models = train_full_models(mlp, "erm", mlp_cfg, 10, mk)
    for k, params in ((None, "all"), (32, "head")):
        st = self_influence(models, x, y, k, 0.0, params)
        print(f"validate trak M=10 k={st['proj_dim']} params={params} vs subsample K=400 (MLP 20-32-2, n={len(y)}): "
              f"Spearman {spearman(st['score'], ref):.4f} (Pearson {pearson(st['score'], ref):.4f}); 1-p baseline "
              f"Spearman {spearman(1 - st['p_true'], ref):.4f} (Pearson {pearson(1 - st['p_true'], ref):.4f})",
              flush=True)
    if traker_available():
        st = self_influence(models, x, y, 128)
        tr = traker_self_influence(models, x, y, 128)
        print(f"validate traker vs native trak (k=128, M=10): Spearman {spearman(tr, st['score']):.4f}", flush=True)


def speed() -> None:
    """5,000 examples, 2,048-dim features, linear head (Setup 2.1 with noise_dim 2046), ERM."""
    data = make_setup21(n_train=5000, n_val=10, n_test=10, noise_dim=2046, seed=0)
    print(f"speed: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"n=5000 d={data.dim}", flush=True)
    cfg = TrainConfig(epochs=1000, lr=1e-2, selection="last")
    for est, k, c in (("subsample", 16, cfg), ("trak", 5, cfg),
                      ("newton", None, TrainConfig(epochs=1000, lr=1e-2, weight_decay=1e-3, selection="last"))):
        t0 = time.perf_counter()
        estimate(data, "erm", est, c, num_models=k)
        what = {"subsample": "K=16 half-models x 1000 full-batch epochs", "trak": "M=5 models x 1000 epochs + TRAK",
                "newton": "Newton fit to convergence + closed form"}[est]
        print(f"speed {est:<9} ({what}): {time.perf_counter() - t0:.1f} s", flush=True)
    x, y = data.x[data.indices(0)], data.y[data.indices(0)]
    t0 = time.perf_counter()
    models = train_full_models(data, "erm", cfg, 5)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    self_influence(models, x, y, 512)
    t_native = time.perf_counter() - t0
    msg = f"speed trak split: training 5 models {t_train:.1f} s, native TRAK diagonal (k=512) {t_native:.1f} s"
    if traker_available():
        t0 = time.perf_counter()
        traker_self_influence(models, x, y, 512)
        msg += f", traker (k=512, full n x n then diag) {time.perf_counter() - t0:.1f} s"
    print(msg, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("gaps", "validate", "speed", "all"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="keep each gaps run's files (fig2.png, ...) here")
    p.add_argument("--only", default="", help="gaps: comma-separated runs, e.g. newton,loo,subsample:2000")
    args = p.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}", flush=True)
    if args.what in ("validate", "all"):
        validate()
    if args.what in ("gaps", "all"):
        gaps(args.seeds, args.out, [o for o in args.only.split(",") if o] or None)
    if args.what in ("speed", "all"):
        speed()


if __name__ == "__main__":
    main()
