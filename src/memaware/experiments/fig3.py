"""Paper Fig. 3 (Setup C.1, ``memaware fig3``): good, bad and ugly memorization in regression. One MLP per noise
level trained to a target training MSE, measured on a clean sweep of the core feature (test MSE) and by how much of
its fit rides on the input noise; the three runs of the figure and a sweep over sigma and seeds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..data.regression import RegressionProblem, make_setup_c1, stack_problems
from ..engine import TrainConfig
from ..lazy import lazy_module
from ..plots import pyplot
from ..plots.fig3 import Fig3Canvas, plot_fig3, plot_fig3_sweep
from ..threads import run_side_by_side

torch = lazy_module("torch")

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
    from ..engine.fitting import fit  # torch: at the first training, not when the command parses
    from ..models.heads import EnsembleMLP

    data = stack_problems(problems)
    model = EnsembleMLP(data.x.shape[2], init_seeds, hidden=hidden, activation="tanh")
    # one evaluation, at the end: a regression run records only its loss there, and an evaluation per step (one
    # epoch is one full-batch step) would cost ~3 % of the step
    cfg = TrainConfig(
        epochs=max_steps, lr=lr, optimizer="adam", selection="last", eval_every=max_steps, progress=progress,
        progress_label=label,
    )  # fmt: skip
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
    items: list[tuple[str, RegressionProblem, int]], max_steps: int, progress: bool,
    meanwhile: Callable[[], Any] = pyplot, workers: int = 2,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """One model per (label, problem, init seed), up to ``workers`` at a time in worker processes
    (``threads.run_side_by_side``), ``meanwhile()`` on a core they leave free (by default matplotlib's import, for
    the figure that follows).

    For these small MLPs one model per core beats an ensemble: an ensemble steps every member until the
    slowest reaches the target, and batched matmuls of 20 x 300 blocks gain nothing on a CPU (BENCHMARKS.md).
    """

    def train(item: tuple[str, RegressionProblem, int]) -> dict[str, Any]:
        label, p, init_seed = item
        return train_problems([p], [init_seed], max_steps=max_steps, progress=progress, label=label)[0]

    rows = run_side_by_side(train, items, workers, meanwhile=meanwhile)
    return dict(zip([label for label, _, _ in items], rows, strict=True))


def run_fig3(
    seed: int = 0,
    max_steps: int = 100_000,
    progress: bool = False,
    meanwhile: Callable[[list[RegressionProblem]], Any] | None = None,
    **data_kwargs: Any,
):
    """The three runs of Fig. 3 on the same seed (same init, label noise and standardized input noise).

    ``meanwhile(problems)`` runs while the last trainings still run (default: importing matplotlib); the CLI draws
    the data's part of the figure there (``plots.fig3.Fig3Canvas``).
    """
    t0 = time.perf_counter()
    problems = [make_setup_c1(sigma=s, seed=seed, **data_kwargs) for s in RUNS.values()]
    items = [(name, p, seed) for name, p in zip(RUNS, problems, strict=True)]
    ready = pyplot if meanwhile is None else (lambda: meanwhile(problems))
    done = _train_each(sorted(items, key=lambda it: it[0] != "ugly"), max_steps, progress, ready)  # longest first
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
    """Every (sigma, seed) pair: one model each, two at a time in worker processes, or (``batched``) all as one
    ensemble."""
    t0 = time.perf_counter()
    pairs = [(s, seed) for seed in seeds for s in sigmas]
    problems = [make_setup_c1(sigma=s, seed=seed, **data_kwargs) for s, seed in pairs]
    if batched:
        rows = train_problems(
            problems, [seed for _, seed in pairs], max_steps=max_steps, progress=progress, label="fig3 sweep"
        )
    else:
        items = [(f"sigma={s:g} seed={seed}", p, seed) for (s, seed), p in zip(pairs, problems, strict=True)]
        # small sigmas need the most steps: start them first so that the two workers finish together
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


def save_fig3(
    res: dict[str, Any], problems: list[RegressionProblem], curves: dict[str, Any], out: str | Path,
    canvas: Fig3Canvas | None = None,
) -> Path:  # fmt: skip
    """Writes ``out``/fig3.png (``plots.fig3``; on ``canvas`` when the data's part was drawn already) and
    ``out``/fig3.json from what ``run_fig3`` returned."""
    out = Path(out)
    if canvas is None:
        plot_fig3(res, problems, curves, out / "fig3.png")
    else:
        canvas.finish(res, curves, out / "fig3.png")
    write_json(out / "fig3.json", res)
    return out


def save_fig3_sweep(res: dict[str, Any], out: str | Path) -> Path:
    """Writes ``out``/fig3_sweep.png and ``out``/fig3_sweep.json from what ``run_sweep`` returned."""
    out = Path(out)
    plot_fig3_sweep(res, out / "fig3_sweep.png")
    write_json(out / "fig3_sweep.json", res)
    return out


__all__ = ["RUNS", "SWEEP_SIGMAS", "noise_reliance", "train_problems", "run_fig3", "run_sweep", "save_fig3",
           "save_fig3_sweep"]
