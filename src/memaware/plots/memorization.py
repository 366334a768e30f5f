"""Paper Fig. 2 for any estimator: per-group score distributions, methods side by side (left), and the
proportion of each group's examples per score interval (right)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.groups import named_group
from ..memorization.audit import group_ids, group_roles
from . import pyplot, save

INTERVAL_EDGES = (-np.inf, 0.1, 0.3, 0.5, 0.7, 0.9, np.inf)
INTERVAL_LABELS = ("<0.1", "0.1-0.3", "0.3-0.5", "0.5-0.7", "0.7-0.9", ">=0.9")
COLOURS = ("#3A7BC2", "#EE944F", "#4C9A2A", "#B8336A", "#7D5BA6", "#8C6D31", "#5F9EA0", "#C0504D")


def _label(method: str) -> str:
    """The method's table label (uLA, XRM+GroupDRO, ...); the name in capitals for one memaware does not know."""
    from ..errors import ConfigError
    from ..methods import method_class  # lazy: plotting should not import the methods on its own

    try:
        return method_class(method).label()
    except ConfigError:
        return method.upper()


def plot_fig2(
    scores: dict[str, np.ndarray],
    y: np.ndarray,
    a: np.ndarray,
    num_attrs: int,
    path: str | Path,
    xlabel: str = "memorization score",
    label_names: list[str] | None = None,
    attr_names: list[str] | None = None,
) -> Path:
    """One row per method (``scores``: {method: (n,) scores}); left: per-group histograms (density), minority
    groups dashed; right: fraction of each group's examples in each score interval. Same axes across methods.
    ``label_names`` / ``attr_names``: a table's names, shown beside the codes in the legends."""
    plt = pyplot()
    g, names = group_ids(y, a, num_attrs)
    names = {i: named_group(name, label_names, attr_names) for i, name in names.items()}
    roles = group_roles(np.asarray(y), g)
    order = sorted(names, key=lambda i: (i < 0, i))
    allv = np.concatenate(list(scores.values()))
    lo, hi = float(min(allv.min(), 0.0)), float(max(allv.max(), 1.0))
    bins = np.linspace(lo, hi, 41)
    methods = list(scores)
    fig, axes = plt.subplots(len(methods), 2, figsize=(12, 3.6 * len(methods)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    ymax = 0.0
    for row, method in enumerate(methods):
        s = scores[method]
        ax = axes[row, 0]
        for c, i in enumerate(order):
            v = s[g == i]
            if not len(v):
                continue
            label = f"{names[i]} ({roles[i]}, n={len(v)}, mean {v.mean():.2f})"
            dens, _, _ = ax.hist(v, bins=bins, density=True, histtype="step", lw=2, color=COLOURS[c % len(COLOURS)],
                                 ls="--" if roles[i] == "minority" else "-", label=label)
            ymax = max(ymax, float(np.max(dens)))
            ax.axvline(v.mean(), color=COLOURS[c % len(COLOURS)], lw=1, ls=":")
        ax.set(xlabel=xlabel, ylabel="density", title=f"{_label(method)}: per-group distribution", yscale="symlog")
        ax.grid(ls="--", lw=0.5, alpha=0.5)
        ax.legend(fontsize=8, loc="upper right", framealpha=0.85)

        ax = axes[row, 1]
        width = 0.8 / max(1, len(order))
        xs = np.arange(len(INTERVAL_LABELS))
        for c, i in enumerate(order):
            v = s[g == i]
            if not len(v):
                continue
            frac = np.histogram(v, bins=np.array(INTERVAL_EDGES))[0] / len(v)
            ax.bar(xs + (c - (len(order) - 1) / 2) * width, frac, width, color=COLOURS[c % len(COLOURS)],
                   hatch="//" if roles[i] == "minority" else None, edgecolor="white", label=names[i])
        ax.set_xticks(xs, INTERVAL_LABELS)
        # headroom above 1: the legend sits there, over no bar (the end intervals often hold a whole group)
        ax.set(xlabel=f"{xlabel} interval", ylabel="fraction of the group", ylim=(0, 1.5),
               title=f"{_label(method)}: proportion per interval")
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.grid(axis="y", ls="--", lw=0.5, alpha=0.5)
        ax.legend(fontsize=7, loc="upper center", ncols=2, title="hatched: minority", title_fontsize=7,
                  framealpha=0.9)
    for row in range(len(methods)):
        # symlog axis: 1.5 decades of headroom keep the legend (upper right) above every bar
        axes[row, 0].set_ylim(0, ymax * 40 if ymax > 0 else 1)
        axes[row, 0].set_xlim(lo, hi)
    fig.tight_layout()
    return save(fig, path)
