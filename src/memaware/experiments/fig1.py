"""Paper Fig. 1 on Setup 2.1 (``memaware fig1``): the three runs (ERM without noise, ERM and MAT with memorizable
noise) trained on the same data seed, their final majority / minority accuracies and curves; fig1.png + fig1.json."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..data import TEST, TRAIN, GroupData, make_setup21
from ..engine import FitResult, TrainConfig, fit
from ..metrics import majority_minority_acc
from ..plots import pyplot
from ..plots.fig1 import plot_fig1
from ..threads import run_side_by_side


@dataclass(frozen=True)
class Fig1Run:
    key: str
    title: str
    sigma: float
    method: str
    lr: float


def fig1_runs(sigma_noisy: float = 0.5) -> list[Fig1Run]:
    # the noiseless run uses the authors' larger step (3e-2): with no noise to fit, ERM must move its boundary
    # all the way to x_y, which at 1e-2 happens only near the end of 1000 epochs
    return [
        Fig1Run("erm_noiseless", r"ERM, $\sigma_\epsilon = 0$ (no memorization)", 0.0, "erm", 3e-2),
        Fig1Run("erm_noisy", rf"ERM, $\sigma_\epsilon = {sigma_noisy:g}$", sigma_noisy, "erm", 1e-2),
        Fig1Run("mat_noisy", rf"MAT, $\sigma_\epsilon = {sigma_noisy:g}$", sigma_noisy, "mat", 1e-2),
    ]


def final_metrics(result: FitResult, data: GroupData) -> dict[str, dict[str, float]]:
    """Majority / minority accuracy of the final model on train and test."""
    out = {}
    for name, split in (("train", TRAIN), ("test", TEST)):
        idx = data.indices(split)
        pred = result.predict_logits(data.x[idx]).argmax(dim=1)
        maj, mino = majority_minority_acc(pred == data.y[idx], data.y[idx], data.a[idx])
        out[name] = {"majority": maj, "minority": mino}
    return out


def run_fig1(
    seed: int = 0,
    epochs: int = 1000,
    sigma: float = 0.5,
    temperature: float = 0.1,
    mat_mode: str = "two-phase",
    progress: bool = False,
    parallel: int = 2,
    **data_kwargs: Any,
) -> tuple[dict[str, Any], dict[str, tuple[FitResult, GroupData]]]:
    """Trains the three runs of Fig. 1 on the same data seed, up to ``parallel`` at a time (``memaware.threads``).

    Returns (json-ready results, {key: (fit, data)}); the numbers do not depend on ``parallel``.
    """
    t0 = time.perf_counter()
    runs = fig1_runs(sigma)
    datasets = {s: make_setup21(sigma=s, seed=seed, **data_kwargs) for s in {r.sigma for r in runs}}

    def train(run: Fig1Run) -> FitResult:
        cfg = TrainConfig(
            epochs=epochs,
            lr=run.lr,
            seed=seed,
            selection="last",
            history_splits=("test",),
            progress=progress,
            progress_label=run.key,
        )
        kwargs = {"temperature": temperature, "mode": mat_mode} if run.method == "mat" else {}
        return fit(datasets[run.sigma], run.method, cfg, **kwargs)

    # the runs are independent and latency-bound: side by side (worker processes where it is safe, memaware.threads)
    # when torch uses one intra-op thread, importing matplotlib for the figure meanwhile
    order = sorted(runs, key=lambda r: r.method != "mat")  # the longest (XRM + MAT) first
    fits = run_side_by_side(train, order, parallel, meanwhile=pyplot)
    by_key = {r.key: f for r, f in zip(order, fits, strict=True)}
    results, fitted = {}, {}
    for run in runs:
        result, data = by_key[run.key], datasets[run.sigma]
        h = result.history
        results[run.key] = {
            "final": final_metrics(result, data),
            "history": {
                "epoch": h["epoch"],
                "loss": h["loss"],
                "train": {k: h["train"][k] for k in ("majority", "minority")},
                "test": {k: h["test"][k] for k in ("majority", "minority")},
            },
            "config": {
                "sigma": run.sigma,
                "method": run.method,
                "lr": run.lr,
                "epochs": epochs,
                **result.method.describe(),
            },
        }
        fitted[run.key] = (result, data)
    return {"runs": results, "seconds": time.perf_counter() - t0, "seed": seed}, fitted


def save_fig1(res: dict[str, Any], fitted: dict[str, tuple[FitResult, GroupData]], out: str | Path) -> Path:
    """Writes ``out``/fig1.png (``plots.fig1``) and ``out``/fig1.json from what ``run_fig1`` returned."""
    out = Path(out)
    sigma = max(r["config"]["sigma"] for r in res["runs"].values())  # the noisy runs' sigma
    plot_fig1(res, fitted, out / "fig1.png", [r.title for r in fig1_runs(sigma)])
    write_json(out / "fig1.json", res)
    return out


__all__ = ["run_fig1", "save_fig1", "final_metrics", "fig1_runs"]
