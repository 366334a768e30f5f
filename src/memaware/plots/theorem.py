"""The Theorem 2.2 phase diagram (``experiments.theorem``): P(y_hat = a) and P(y_hat = y) over (sigma, d), with the
fixed-point boundary and the theorem's curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..theory.sweep import observed_regime
from . import pyplot, save


def _grid(result: dict, key: str) -> tuple[list[float], list[int], np.ndarray]:
    """(sigmas, dims, mean over seeds of ``key`` as a (len(dims), len(sigmas)) array)."""
    sigmas, dims = result["config"]["sigmas"], result["config"]["dims"]
    vals = np.full((len(dims), len(sigmas)), np.nan)
    for i, d in enumerate(dims):
        for j, s in enumerate(sigmas):
            v = [c[key] for c in result["cells"] if c["d"] == d and c["sigma"] == s]
            vals[i, j] = float(np.mean(v)) if v else np.nan
    return sigmas, dims, vals


def _log_edges(x: np.ndarray) -> np.ndarray:
    """Cell edges halfway (in log space) between sorted positive centres."""
    lx = np.log(x)
    step = np.diff(lx)
    first = step[0] if len(step) else 0.5
    last = step[-1] if len(step) else 0.5
    mid = 0.5 * (lx[:-1] + lx[1:])
    return np.exp(np.concatenate([[lx[0] - first / 2], mid, [lx[-1] + last / 2]]))


def _sigma_positions(sigmas: list[float]) -> np.ndarray:
    """x positions on a log axis: sigma itself; sigma = 0 one grid step left of the smallest positive one."""
    pos = np.array(sigmas, dtype=float)
    positive = pos[pos > 0]
    if len(positive) == 0:
        return np.ones_like(pos)
    step = positive[1] / positive[0] if len(positive) > 1 else 10.0
    return np.where(pos > 0, pos, positive[0] / max(step, 2.0))


def plot_phase(result: dict, path: str | Path) -> Path:
    """Two heatmaps over (sigma, d): P(y_hat = a) and P(y_hat = y), with the fixed-point boundary
    sigma^2 d = c* and the theorem's curve gamma = sigma sqrt(d / m)."""
    plt = pyplot()
    import matplotlib.patheffects as pe  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415

    cfg = result["config"]
    sigmas, dims, _ = _grid(result, "p_pred_eq_a")
    xs = _sigma_positions(sigmas)
    x_edges, y_edges = _log_edges(xs), _log_edges(np.array(dims, dtype=float))
    c_star, m_g2 = result["boundary"]["sigma2_d"], result["boundary"]["m_gamma2"]
    # curves only over the positive-sigma columns (sigma = 0 is not on the log axis)
    first_pos = int(np.argmax(np.array(sigmas) > 0)) if any(s > 0 for s in sigmas) else len(sigmas) - 1
    s_line = np.geomspace(x_edges[first_pos], x_edges[-1], 200)
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 5.6), constrained_layout=True)
    stroke = [pe.Stroke(linewidth=4, foreground="black"), pe.Normal()]
    for ax, key, title in ((axes[0], "p_pred_eq_a", r"$P(\hat y = a)$: follows the spurious attribute"),
                           (axes[1], "p_pred_eq_y", r"$P(\hat y = y)$: follows the label")):
        _, _, vals = _grid(result, key)
        mesh = ax.pcolormesh(x_edges, y_edges, vals, cmap="viridis", vmin=0.5, vmax=1.0, shading="flat")
        for i, d in enumerate(dims):
            for j in range(len(sigmas)):
                v = vals[i, j]
                ax.text(xs[j], d, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.8 else "black")
        # where the observed regime (per seed) contradicts the prediction: a red frame around the cell
        for i, d in enumerate(dims):
            for j, s in enumerate(sigmas):
                cs = [c for c in result["cells"] if c["d"] == d and c["sigma"] == s and c["solver_converged"]]
                wrong = [c for c in cs if observed_regime(c["p_pred_eq_a"], c["p_pred_eq_y"]) not in
                         ("mixed", c["predicted_regime"])]
                if wrong:
                    ax.add_patch(plt.Rectangle((x_edges[j], y_edges[i]), x_edges[j + 1] - x_edges[j],
                                               y_edges[i + 1] - y_edges[i], fill=False, ec="red", lw=1.5))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.set_ylim(y_edges[0], y_edges[-1])
        ax.set_xticks(xs, ["0" if s == 0 else f"{s:g}" for s in sigmas], fontsize=8)
        # below d = n the dropped cross-noise terms are not small (docs/theory.md, sec. 6): mark d = n
        ax.set_yticks(dims, [f"{d} = n" if d == cfg["n"] else str(d) for d in dims], fontsize=8)
        ax.minorticks_off()
        if any(s == 0 for s in sigmas):
            ax.axvline(x_edges[1], color="white", lw=2)  # sigma = 0 column sits left of the log axis' break
        if c_star is not None and c_star > 0:
            ax.plot(s_line, c_star / s_line**2, color="red", lw=2.5, path_effects=stroke)
        ax.plot(s_line, m_g2 / s_line**2, color="white", lw=2, ls="--", path_effects=stroke)
        if y_edges[0] < cfg["n"] < y_edges[-1] and cfg["n"] not in dims:
            ax.axhline(cfg["n"], color="lightgray", lw=1.5, ls=":")
        ax.set_xlabel(r"noise level $\sigma$ (log axis; first column $\sigma = 0$)")
        ax.set_ylabel("noise dimension d (log axis)")
        ax.set_title(title, fontsize=11)
        fig.colorbar(mesh, ax=ax, shrink=0.9, extend="min",
                     label=f"mean over {cfg['seeds']} seeds (balanced test set)")
    off = " - off the plot" if m_g2 / x_edges[-1] ** 2 > y_edges[-1] else ""
    c_label = (f"fixed point e = 0 (eq. 21-24): $\\sigma^2 d$ = {c_star:.0f}" if c_star else
               "fixed point: e <= 0 everywhere (always core)")
    handles = [Line2D([], [], color="red", lw=2.5, path_effects=stroke, label=c_label),
               Line2D([], [], color="white", lw=2, ls="--", path_effects=stroke,
                      label=f"theorem: $\\gamma = \\sigma\\sqrt{{d/m}}$, d = {m_g2:.0f}/$\\sigma^2${off}"),
               plt.Rectangle((0, 0), 1, 1, fill=False, ec="red", lw=1.5,
                             label="a seed observed opposite to the prediction")]
    if y_edges[0] < cfg["n"] < y_edges[-1] and cfg["n"] not in dims:
        handles.append(Line2D([], [], color="lightgray", lw=1.5, ls=":", label="d = n"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    agree = result["agreement"]
    fig.suptitle(f"Theorem 2.2 phase diagram: n = {cfg['n']}, $\\gamma$ = {cfg['gamma']:g}, "
                 f"$\\rho$ = {cfg['rho']:g}, $\\lambda$ = {cfg['lambda']:g}; agreement "
                 f"{'n/a' if agree is None else f'{agree:.2f}'} (spurious above the red curve)", fontsize=12)
    return save(fig, path)
