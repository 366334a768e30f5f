"""Paper Fig. 1 on Setup 2.1: ERM without noise (no memorization possible) learns the core feature; ERM with
memorizable noise relies on the spurious feature and memorizes the minority; MAT with the same noise learns the
core feature. Writes DIR/fig1.png and DIR/fig1.json (see README, "Results files")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .common import add_common


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--epochs", type=int, default=1000, help="full-batch epochs per run (MAT: per phase)")
    p.add_argument("--sigma", type=float, default=0.5, help="noise std of the noisy runs")
    p.add_argument(
        "--temperature", type=float, default=0.1, help="MAT softmax temperature on held-out logits"
    )
    p.add_argument(
        "--mat-mode",
        choices=("two-phase", "single-run"),
        default="two-phase",
        help="two-phase: XRM then MAT (authors' code); single-run: three heads in one run (Appendix A)",
    )
    p.add_argument("--noise-dim", type=int, default=1798, help="number of noise dimensions d")
    p.add_argument("--n", type=int, default=1000, help="examples per split")


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.sigma < 0 or args.n < 1 or args.noise_dim < 0:
        raise ConfigError(
            f"need epochs >= 1, sigma >= 0, n >= 1, noise-dim >= 0; got epochs={args.epochs}, "
            f"sigma={args.sigma}, n={args.n}, noise-dim={args.noise_dim}"
        )
    from ..experiments.fig1 import run_fig1, save_fig1  # torch: once the arguments are good
    from ..threads import use_one_intraop_thread

    out = Path(args.out)
    use_one_intraop_thread()
    res, fitted = run_fig1(
        seed=args.seed,
        epochs=args.epochs,
        sigma=args.sigma,
        temperature=args.temperature,
        mat_mode=args.mat_mode,
        progress=not args.quiet,
        noise_dim=args.noise_dim,
        n_train=args.n,
        n_val=args.n,
        n_test=args.n,
    )
    save_fig1(res, fitted, out)
    if not args.quiet:
        print(summary(res, out))
    return 0


def summary(res: dict[str, Any], out: Path) -> str:
    lines = [
        f"Fig. 1 (seed {res['seed']}, {res['seconds']:.1f} s) -> {out}/fig1.png, {out}/fig1.json",
        f"{'run':<15}{'train maj':>10}{'train min':>10}{'test maj':>10}{'test min':>10}",
    ]
    for key, r in res["runs"].items():
        f = r["final"]
        lines.append(
            f"{key:<15}{f['train']['majority']:>10.3f}{f['train']['minority']:>10.3f}"
            f"{f['test']['majority']:>10.3f}{f['test']['minority']:>10.3f}"
        )
    return "\n".join(lines)
