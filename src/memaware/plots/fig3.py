"""Paper Fig. 3 (good, bad and ugly memorization in regression) and its sigma sweep (``experiments.fig3``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import pyplot, save

TITLES = {"good": "Good memorization", "bad": "Bad memorization", "ugly": "Ugly memorization"}


class Fig3Canvas:
    """Fig. 3's three panels, drawn in two parts: everything the data fixes (true f, training points, labels, legend,
    margins) when built, the learned curves, titles and shared y-range in ``finish``. ``memaware fig3`` builds it
    while the longest training still runs, so that only ``finish`` follows the last result."""

    def __init__(self, problems: list, names: list[str]):
        plt = pyplot()
        self.problems, self.names = problems, names
        self.fig, self.axes = plt.subplots(1, len(names), figsize=(13.5, 4.3), sharey=True, squeeze=False)
        self.axes = self.axes[0]
        xs_all = np.concatenate([np.r_[p.x_sweep[:, 0].numpy(), p.x_train[:, 0].numpy()] for p in problems])
        x_lim = _padded(xs_all.min(), xs_all.max(), 0.03)
        self.learned = []
        for ax, p in zip(self.axes, problems, strict=True):
            xs = p.x_sweep[:, 0].numpy()
            ax.plot(xs, p.f_sweep.numpy(), "k--", lw=2, alpha=0.6, label=r"true function $f(x_y)$")
            (line,) = ax.plot([], [], c="#4B79BD", lw=2, alpha=0.85, label=r"learned $g(x_y, \epsilon = 0)$")
            self.learned.append(line)
            ax.scatter(
                p.x_train[:, 0].numpy(),
                p.y_train.numpy(),
                c="#4B79BD",
                edgecolors="k",
                s=30,
                zorder=3,
                label="noisy training points",
            )
            ax.set(xlabel=r"core feature $x_y$", xlim=x_lim)
            ax.grid(ls="--", lw=0.5, alpha=0.6)
        self.axes[0].set_ylabel("target / prediction")
        self.axes[0].legend(frameon=False, fontsize=9, loc="upper left")
        # the margins tight_layout finds for this figure, written down: it measures every text, a fifth of the
        # drawing time
        self.fig.subplots_adjust(left=0.058, right=0.987, bottom=0.14, top=0.871, wspace=0.064)

    def draw_ahead(self) -> None:
        """Renders the data's part once, off the critical path: fonts, ticks and text layouts are then ready and the
        final draw in ``finish`` takes about half as long (the PNG is the same)."""
        self.fig.canvas.draw()

    def finish(self, res: dict[str, Any], curves: dict[str, Any], path: str | Path) -> Path:
        """Adds each run's learned curve g on the clean sweep and its numbers, sets the y-range from everything
        drawn (with a margin) and writes the PNG."""
        ys_all = np.concatenate(
            [np.r_[p.y_train.numpy(), p.f_sweep.numpy()] for p in self.problems]
            + [curves[name].numpy() for name in self.names]
        )
        for ax, line, name, p in zip(self.axes, self.learned, self.names, self.problems, strict=True):
            run = res["runs"][name]
            line.set_data(p.x_sweep[:, 0].numpy(), curves[name].numpy())
            ax.set_title(
                f"{TITLES[name]}: $\\sigma_\\epsilon$ = {run['sigma']:g}\n"
                f"test MSE {run['test_mse']:.4f}, noise reliance {run['noise_reliance']:.3f}",
                fontsize=11,
            )
        self.axes[0].set_ylim(*_padded(ys_all.min(), ys_all.max(), 0.08))
        return save(self.fig, path)


def plot_fig3(res: dict[str, Any], problems: list, curves: dict[str, Any], path: str | Path) -> Path:
    """Three panels: training points, the true f (dashed) and the learned g on the clean sweep."""
    return Fig3Canvas(problems, list(res["runs"])).finish(res, curves, path)


def _padded(low: float, high: float, fraction: float) -> tuple[float, float]:
    pad = fraction * max(high - low, 1e-12)
    return float(low - pad), float(high + pad)


def plot_fig3_sweep(res: dict[str, Any], path: str | Path) -> Path:
    """test MSE and noise reliance against sigma (mean and min-max over seeds); sigma = 0 drawn at the left."""
    plt = pyplot()
    sigmas = res["sigmas"]
    positive = [s for s in sigmas if s > 0]
    zero_at = min(positive) / 10 if positive else 1e-7
    xs = np.array([s if s > 0 else zero_at for s in sigmas])
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for ax, key, label in (
        (axes[0], "test_mse", "test MSE against f (clean sweep)"),
        (axes[1], "noise_reliance", r"noise reliance $|g(x_i) - g(x_i^{\epsilon=0})|$"),
    ):
        vals = [[r[key] for r in res["runs"] if r["sigma"] == s] for s in sigmas]
        mean = np.array([np.mean(v) for v in vals])
        lo, hi = np.array([min(v) for v in vals]), np.array([max(v) for v in vals])
        ax.fill_between(
            xs, lo, hi, color="#4B79BD", alpha=0.2, label=f"min-max over {len(res['seeds'])} seeds"
        )
        ax.plot(xs, mean, "o-", c="#4B79BD", label="mean")
        ax.set_xscale("log")
        if key == "test_mse":
            ax.set_yscale("log")
        ax.set(
            xlabel=r"input-noise scale $\sigma_\epsilon$ (leftmost point: $\sigma_\epsilon = 0$)",
            ylabel=label,
        )
        ax.set_xticks(xs, ["0" if s == 0 else f"{s:g}" for s in sigmas], rotation=45, fontsize=8)
        ax.grid(ls="--", lw=0.5, alpha=0.6)
        ax.legend(frameon=False, fontsize=9)
    axes[0].set_title("ugly (sigma = 0) -> good -> bad as input noise grows", fontsize=11)
    axes[1].set_title("how much the fit at a training point rides on its noise", fontsize=11)
    fig.tight_layout()
    return save(fig, path)
