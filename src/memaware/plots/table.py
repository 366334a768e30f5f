"""Paper Table 1 as a bar chart of test worst-group accuracy (``memaware table``; the text formats are in
``memaware.sweep.table_format``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..sweep.table import Table, method_label
from . import pyplot, save


def bar_color(cmap, i: int):
    """Method ``i``'s colour: tab10 in order; with more than 10 methods, tab20's ten dark hues, then its ten light
    ones, so that no two methods share a colour (tab10 would repeat ERM's blue for the eleventh)."""
    if cmap.N <= 10:
        return cmap(i % cmap.N)
    return cmap((2 * i) % 20 + (2 * i // 20) % 2)


def plot_table(t: Table, path: str | os.PathLike) -> Path:
    """Bar chart of test worst-group accuracy (mean, error bar = std over seeds), one group of bars per dataset."""
    plt = pyplot()
    n_m, n_d = max(1, len(t.methods)), max(1, len(t.datasets))
    width = 0.8 / n_m
    # capped width: a page or README shows the chart ~1000 px wide, where a wider figure's text would shrink away
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 1.6 * n_d * max(1.0, n_m / 3) + 1.5)), 4.6))
    cmap = plt.get_cmap("tab10" if n_m <= 10 else "tab20")
    for i, m in enumerate(t.methods):
        xs, ys, es, labels = [], [], [], []
        for j, ds in enumerate(t.datasets):
            cell = t.cells[(ds, m)]
            stat = cell.stat("worst")
            if stat is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * stat[0])
            es.append(100 * stat[1] if cell.n_seeds > 1 else float("nan"))
            labels.append(f"{100 * stat[0]:.1f}" + ("*" if cell.partial else ""))
        bars = ax.bar(xs, ys, width * 0.92, color=bar_color(cmap, i), label=method_label(m))
        ax.errorbar(xs, ys, yerr=es, fmt="none", ecolor="black", capsize=3, lw=1)
        for b, text, err in zip(bars, labels, es, strict=True):
            inside = b.get_height() >= 15  # a short (or zero) bar cannot hold its label: write it above, in black
            above = b.get_height() + (0.0 if err != err else err) + 1.5  # over the error bar's cap (nan: none)
            ax.text(
                b.get_x() + b.get_width() / 2,
                1.5 if inside else above,
                text,
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                color="white" if inside else "black",
            )
    ax.set_xlim(-0.5, n_d - 0.5)
    ax.set_xticks(range(len(t.datasets)))
    ax.set_xticklabels(t.datasets)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test worst-group accuracy (%)")
    partial = any(c.partial for c in t.cells.values())
    title = f"selection: {t.criterion} ({t.protocol}); error bars: std over seeds"
    ax.set_title(title + ("\n* fewer seeds than planned" if partial else ""), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(t.methods), 4), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return save(fig, path)
