"""Paper Fig. 1: accuracy curves and decision boundaries of the Setup 2.1 runs (``experiments.fig1``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..lazy import lazy_module
from . import pyplot, save

torch = lazy_module("torch")

CURVES = (  # (history split, key, label, colour, line style)
    ("train", "majority", "Majority train", "k", "-"),
    ("train", "minority", "Minority train", "k", "--"),
    ("test", "majority", "Majority test", "#DF3000", "-"),
    ("test", "minority", "Minority test", "#DF3000", "--"),
)


def plot_fig1(res: dict[str, Any], fitted: dict[str, Any], path: str | Path, titles: list[str]) -> Path:
    """One column per run: accuracy curves (top), decision boundary in the (x_y, gamma x_a) plane (bottom)."""
    plt = pyplot()
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.lines import Line2D

    from ..data import TRAIN

    cmap = LinearSegmentedColormap.from_list("memaware", ["#5CA0D4", "white", "#F6B66A"], N=100)
    keys = list(res["runs"])
    fig, axes = plt.subplots(
        2, len(keys), figsize=(4.6 * len(keys), 8.4), gridspec_kw={"height_ratios": [2, 3]}, squeeze=False
    )
    for col, key in enumerate(keys):
        run, (result, data) = res["runs"][key], fitted[key]
        ax = axes[0, col]
        epochs = run["history"]["epoch"]
        for split, k, label, c, ls in CURVES:
            ax.plot(epochs, run["history"][split][k], c=c, ls=ls, lw=2, alpha=0.8, label=label)
        ax.set(xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02), title=titles[col])
        ax.grid(ls="--", lw=0.5, alpha=0.6)

        ax = axes[1, col]
        x_lim, a_lim = 2.0, 10.0
        xs, as_ = np.linspace(-x_lim, x_lim, 90), np.linspace(-a_lim, a_lim, 90)
        gx, ga = np.meshgrid(xs, as_)
        grid = torch.zeros(gx.size, data.dim)
        grid[:, 0], grid[:, 1] = torch.from_numpy(gx.ravel()).float(), torch.from_numpy(ga.ravel()).float()
        logits = result.predict_logits(grid)
        p1 = torch.sigmoid(10 * (logits[:, 1] - logits[:, 0])).view(gx.shape).numpy()
        ax.contourf(gx, ga, p1, levels=np.linspace(0, 1, 21), cmap=cmap, alpha=0.85)
        ax.contour(gx, ga, p1, levels=[0.5], colors="k", linewidths=1.2)
        idx = data.indices(TRAIN)
        xt, yt, at = data.x[idx, :2].numpy(), data.y[idx].numpy(), data.a[idx].numpy()
        colours = np.array(["#3A7BC2", "#EE944F"])[yt]
        maj = at == yt
        ax.scatter(
            xt[maj, 0], xt[maj, 1], c=colours[maj], s=14, edgecolors="white", linewidths=0.4, alpha=0.8
        )
        ax.scatter(
            xt[~maj, 0], xt[~maj, 1], c=colours[~maj], s=30, marker="X", edgecolors="k", linewidths=0.5
        )
        ax.axhline(0, ls=":", c="grey", lw=0.8)
        ax.axvline(0, ls=":", c="grey", lw=0.8)
        ax.set(
            xlim=(-x_lim, x_lim),
            ylim=(-a_lim, a_lim),
            xlabel=r"core feature $x_y$",
            ylabel=r"spurious feature $\gamma\, x_a$",
        )
    # one legend per row, outside the axes, so that no legend can hide a curve, a point or the boundary
    curves = [Line2D([], [], c=c, ls=ls, lw=2, alpha=0.8, label=label) for _, _, label, c, ls in CURVES]
    points = [
        Line2D([], [], ls="", marker="o", c="#3A7BC2", label="y = 0, majority"),
        Line2D([], [], ls="", marker="o", c="#EE944F", label="y = 1, majority"),
        Line2D([], [], ls="", marker="X", c="grey", mec="k", label="minority (a != y)"),
        Line2D([], [], c="k", lw=1.2, label="decision boundary (noise = 0)"),
    ]
    # the margins tight_layout(rect=(0, 0.035, 1, 0.965)) finds for this fixed figure, written down: it measured
    # every text's extent, a quarter of the figure's drawing time
    fig.subplots_adjust(left=0.064, right=0.986, bottom=0.107, top=0.922, wspace=0.254, hspace=0.205)
    fig.legend(handles=curves, loc="upper center", ncol=4, frameon=False, fontsize=10, bbox_to_anchor=(0.5, 1.0))
    fig.legend(handles=points, loc="lower center", ncol=4, frameon=False, fontsize=10, bbox_to_anchor=(0.5, 0.0))
    return save(fig, path)
