"""Theorem 2.2 phase diagram: exact logistic ERM on Setup 2.1 over a grid of noise levels sigma and noise
dimensions d (several seeds each), measured against the Appendix F fixed-point prediction (eq. 21-24).

Writes DIR/theorem.json (one record per cell and seed, the agreement between observed and predicted
regimes, the run time) and DIR/phase.png (P(y_hat = a) and P(y_hat = y) on a balanced test set, with the
predicted boundary and the theorem's curve gamma = sigma sqrt(d / m) drawn on them). A cell is observed
"spurious" if P(y_hat = a) >= 0.9, "core" if P(y_hat = y) >= 0.9, else "mixed"; agreement counts the
non-mixed cells.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..theory.settings import DEFAULT_DIMS, DEFAULT_SIGMAS, SweepConfig, observed_regime
from .common import add_common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--n", type=int, default=500, help="training examples")
    parser.add_argument("--gamma", type=float, default=5.0, help="scale of the spurious feature")
    parser.add_argument("--rho", type=float, default=0.9, help="training P(a = y), in (0.5, 1]")
    parser.add_argument("--lambda", dest="lam", metavar="LAMBDA", type=float, default=1e-3,
                        help="weight decay lambda > 0")
    parser.add_argument("--sigmas", type=float, nargs="+", metavar="SIGMA", default=list(DEFAULT_SIGMAS),
                        help="noise levels")
    parser.add_argument("--dims", type=int, nargs="+", metavar="D", default=list(DEFAULT_DIMS),
                        help="noise dimensions d")
    parser.add_argument("--seeds", type=int, metavar="K", default=3,
                        help="seeds per cell (--seed, --seed + 1, ...)")
    parser.add_argument("--n-test", type=int, default=10000, help="balanced test examples per seed")


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The sweep configuration of a parsed command line (validated: ``ConfigError`` on bad values)."""
    cfg = SweepConfig(n=args.n, gamma=args.gamma, rho=args.rho, lam=args.lam,
                      sigmas=tuple(sorted(args.sigmas)), dims=tuple(sorted(args.dims)),
                      seeds=args.seeds, seed=args.seed, n_test=args.n_test)
    cfg.validate()
    return cfg


def summary(result: dict, out: Path) -> str:
    """A few lines for a human: agreement, time, where the boundary lies."""
    cells, cfg = result["cells"], result["config"]
    obs = [observed_regime(c["p_pred_eq_a"], c["p_pred_eq_y"]) for c in cells]
    agree = result["agreement"]
    c_star, m_g2 = result["boundary"]["sigma2_d"], result["boundary"]["m_gamma2"]
    grid = f"{len(cfg['sigmas'])} sigmas x {len(cfg['dims'])} dims x {cfg['seeds']} seeds"
    lines = [f"theorem: {len(cells)} fits ({grid}) in {result['seconds']:.1f} s",
             f"  observed: {obs.count('core')} core, {obs.count('spurious')} spurious, "
             f"{obs.count('mixed')} mixed; agreement with the fixed point: "
             f"{'n/a' if agree is None else f'{agree:.3f}'}"]
    if c_star is None:
        lines.append("  fixed point predicts 'core' at every noise level (gamma^2 (2 rho - 1) <= 1?)")
    else:
        d_mid = cfg["dims"][len(cfg["dims"]) // 2]
        lines.append(f"  predicted boundary: sigma^2 d = {c_star:.1f} (spurious above), "
                     f"e.g. sigma* = {math.sqrt(c_star / d_mid):.3g} at d = {d_mid}")
    lines.append(f"  theorem's curve gamma = sigma sqrt(d/m): d = {m_g2:.0f} / sigma^2")
    lines.append(f"  wrote {out / 'theorem.json'} and {out / 'phase.png'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from ..experiments.theorem import run_theorem  # torch and matplotlib: once the arguments are good

    out = Path(args.out)
    result = run_theorem(cfg, out, quiet=args.quiet)
    if not args.quiet:
        print(summary(result, out))
    return 0
