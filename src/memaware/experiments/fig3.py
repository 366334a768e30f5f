"""Paper Fig. 3 (Setup C.1): good, bad and ugly memorization in regression. An MLP (300-300, tanh, Adam 1e-3,
full batch) is trained until its training MSE is below 1e-6 on 20 noisy points whose inputs carry m = 30 private
noise coordinates of scale sigma: 1e-4 (good: fits the label noise through the input noise, generalizes),
1e-3 (bad: leans on the noise, learns f only partly), 0 (ugly: must bend f itself through every noisy label).
Writes DIR/fig3.png and DIR/fig3.json; with --sweep, a log-spaced range of sigma over several seeds gives
DIR/fig3_sweep.png and DIR/fig3_sweep.json."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..artifacts import write_json
from ..data.regression import RegressionProblem, make_setup_c1, stack_problems
from ..engine import TrainConfig, fit
from ..errors import ConfigError
from ..models import EnsembleMLP
from ..threads import use_one_intraop_thread, worker_count

RUNS = {"good": 1e-4, "bad": 1e-3, "ugly": 0.0}
SWEEP_SIGMAS = (0.0, 1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1)


def noise_reliance(predict, problem: RegressionProblem) -> float:
    """Mean over training points of |g(x_i) - g(x_i with its noise set to 0)|: how much of the fit at a training
    point is carried by that point's private noise coordinates."""
    with torch.no_grad():
        return float((predict(problem.x_train) - predict(problem.x_train_clean)).abs().mean())


def train_problems(
    problems: list[RegressionProblem],
    init_seeds: list[int],
    hidden: tuple[int, ...] = (300, 300),
    lr: float = 1e-3,
    max_steps: int = 100_000,
    target_mse: float = 1e-6,
    progress: bool = False,
    label: str = "fig3",
) -> list[dict[str, Any]]:
    """Trains one MLP per problem (all in one ensemble, one loop) and measures each on its clean sweep."""
    data = stack_problems(problems)
    model = EnsembleMLP(data.x.shape[2], init_seeds, hidden=hidden, activation="tanh")
    cfg = TrainConfig(
        epochs=max_steps, lr=lr, optimizer="adam", selection="last", progress=progress, progress_label=label
    )
    result = fit(data, "mse", cfg, model=model, target_mse=target_mse)
    out = result.outputs
    rows = []
    for e, p in enumerate(problems):

        def predict(x: torch.Tensor, e: int = e) -> torch.Tensor:
            return result.model(x[:, None, :].expand(-1, len(problems), -1))[:, e, 0]

        with torch.no_grad():
            test_mse = float((predict(p.x_sweep) - p.f_sweep).pow(2).mean())
            g_sweep = predict(p.x_sweep)
        rows.append(
            {
                "sigma": p.sigma,
                "seed": p.seed,
                "train_mse": out["train_mse"][e],
                "reached_target": out["reached_target"][e],
                "steps": out["steps"][e],
                "test_mse": test_mse,
                "noise_reliance": noise_reliance(predict, p),
                "_g_sweep": g_sweep,
            }
        )
    return rows


def _train_each(
    items: list[tuple[str, RegressionProblem, int]], max_steps: int, progress: bool, workers: int = 2
) -> dict[str, dict[str, Any]]:
    """One model per (label, problem, init seed), up to ``workers`` at a time (``memaware.threads``).

    For these small MLPs one model per thread beats an ensemble: an ensemble steps every member until the
    slowest reaches the target, and batched matmuls of 20 x 300 blocks gain little on a CPU (BENCHMARKS.md).
    """

    def train(item: tuple[str, RegressionProblem, int]) -> dict[str, Any]:
        label, p, init_seed = item
        return train_problems([p], [init_seed], max_steps=max_steps, progress=progress, label=label)[0]

    with ThreadPoolExecutor(max_workers=worker_count(workers)) as pool:
        return dict(zip([label for label, _, _ in items], pool.map(train, items), strict=True))


def run_fig3(seed: int = 0, max_steps: int = 100_000, progress: bool = False, **data_kwargs: Any):
    """The three runs of Fig. 3 on the same seed (same init, label noise and standardized input noise)."""
    t0 = time.perf_counter()
    problems = [make_setup_c1(sigma=s, seed=seed, **data_kwargs) for s in RUNS.values()]
    items = [(name, p, seed) for name, p in zip(RUNS, problems, strict=True)]
    done = _train_each(sorted(items, key=lambda it: it[0] != "ugly"), max_steps, progress)  # longest first
    rows = [done[name] for name in RUNS]
    curves = {name: r.pop("_g_sweep") for name, r in zip(RUNS, rows, strict=True)}
    res = {"runs": dict(zip(RUNS, rows, strict=True)), "seconds": time.perf_counter() - t0, "seed": seed}
    return res, problems, curves


def run_sweep(
    sigmas=SWEEP_SIGMAS,
    seeds=(0, 1, 2),
    max_steps: int = 30_000,
    progress: bool = False,
    batched: bool = False,
    **data_kwargs,
):
    """Every (sigma, seed) pair: one model each on two threads, or (``batched``) all as one ensemble."""
    t0 = time.perf_counter()
    pairs = [(s, seed) for seed in seeds for s in sigmas]
    problems = [make_setup_c1(sigma=s, seed=seed, **data_kwargs) for s, seed in pairs]
    if batched:
        rows = train_problems(
            problems, [seed for _, seed in pairs], max_steps=max_steps, progress=progress, label="fig3 sweep"
        )
    else:
        items = [(f"sigma={s:g} seed={seed}", p, seed) for (s, seed), p in zip(pairs, problems, strict=True)]
        # small sigmas need the most steps: start them first so that the two threads finish together
        done = _train_each(sorted(items, key=lambda it: it[1].sigma), max_steps, progress)
        rows = [done[label] for label, _, _ in items]
    for r in rows:
        r.pop("_g_sweep")
    return {
        "runs": rows,
        "sigmas": list(sigmas),
        "seeds": list(seeds),
        "batched": batched,
        "seconds": time.perf_counter() - t0,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_common

    add_common(p)
    p.add_argument(
        "--sweep", action="store_true", help="sweep sigma over a log range and several seeds instead"
    )
    p.add_argument("--seeds", type=int, default=3, help="with --sweep: seeds 0..N-1")
    p.add_argument(
        "--batched",
        action="store_true",
        help="with --sweep: train all (sigma, seed) pairs as one ensemble (for GPUs; slower on CPUs)",
    )
    p.add_argument(
        "--sigmas", type=float, nargs="+", default=list(SWEEP_SIGMAS), help="with --sweep: noise levels"
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="step cap (default 100000 for the three runs, 30000 for the sweep)",
    )
    p.add_argument("--n", type=int, default=20, help="training points")
    p.add_argument("--noise-dim", type=int, default=30, help="input-noise dimensions m")
    p.add_argument("--label-noise", type=float, default=0.08, help="std of the label noise")


def run(args: argparse.Namespace) -> int:
    if (
        args.seeds < 1
        or any(s < 0 for s in args.sigmas)
        or (args.max_steps is not None and args.max_steps < 1)
    ):
        raise ConfigError(
            f"need --seeds >= 1, --sigmas >= 0, --max-steps >= 1; got {args.seeds}, "
            f"{args.sigmas}, {args.max_steps}"
        )
    out = Path(args.out)
    use_one_intraop_thread()  # small MLPs: latency-bound (memaware.threads)
    data_kwargs = {"n": args.n, "noise_dim": args.noise_dim, "label_noise": args.label_noise}
    from ..plots_regression import plot_fig3, plot_fig3_sweep

    if args.sweep:
        seeds = tuple(range(args.seed, args.seed + args.seeds))
        res = run_sweep(
            tuple(args.sigmas), seeds, args.max_steps or 30_000, not args.quiet, args.batched, **data_kwargs
        )
        plot_fig3_sweep(res, out / "fig3_sweep.png")
        write_json(out / "fig3_sweep.json", res)
        if not args.quiet:
            print(sweep_summary(res, out))
        return 0
    res, problems, curves = run_fig3(args.seed, args.max_steps or 100_000, not args.quiet, **data_kwargs)
    plot_fig3(res, problems, curves, out / "fig3.png")
    write_json(out / "fig3.json", res)
    if not args.quiet:
        print(summary(res, out))
    return 0


def summary(res: dict[str, Any], out: Path) -> str:
    lines = [
        f"Fig. 3 (seed {res['seed']}, {res['seconds']:.1f} s) -> {out}/fig3.png, {out}/fig3.json",
        f"{'run':<6}{'sigma':>8}{'steps':>8}{'train mse':>11}{'test mse':>10}{'noise reliance':>16}",
    ]
    for name, r in res["runs"].items():
        mark = "" if r["reached_target"] else "  (step cap hit before the target)"
        lines.append(
            f"{name:<6}{r['sigma']:>8.0e}{r['steps']:>8}{r['train_mse']:>11.1e}{r['test_mse']:>10.4f}"
            f"{r['noise_reliance']:>16.4f}{mark}"
        )
    return "\n".join(lines)


def sweep_summary(res: dict[str, Any], out: Path) -> str:
    import statistics

    lines = [
        f"Fig. 3 sweep ({len(res['seeds'])} seeds, {res['seconds']:.1f} s) -> {out}/fig3_sweep.png",
        f"{'sigma':>8}{'test mse (mean)':>17}{'noise reliance':>16}{'reached':>9}",
    ]
    for s in res["sigmas"]:
        rows = [r for r in res["runs"] if r["sigma"] == s]
        lines.append(
            f"{s:>8.0e}{statistics.mean(r['test_mse'] for r in rows):>17.4f}"
            f"{statistics.mean(r['noise_reliance'] for r in rows):>16.4f}"
            f"{sum(r['reached_target'] for r in rows):>6}/{len(rows)}"
        )
    return "\n".join(lines)
