"""Paper Fig. 3 (Setup C.1): good, bad and ugly memorization in regression. An MLP (300-300, tanh, Adam 1e-3,
full batch) is trained until its training MSE is below 1e-6 on 20 noisy points whose inputs carry m = 30 private
noise coordinates of scale sigma: 1e-4 (good: fits the label noise through the input noise, generalizes),
1e-3 (bad: leans on the noise, learns f only partly), 0 (ugly: must bend f itself through every noisy label).
Writes DIR/fig3.png and DIR/fig3.json; with --sweep, a log-spaced range of sigma over several seeds gives
DIR/fig3_sweep.png and DIR/fig3_sweep.json."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..experiments.fig3 import RUNS, SWEEP_SIGMAS, run_fig3, run_sweep, save_fig3, save_fig3_sweep
from ..threads import use_one_intraop_thread
from .common import add_common


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    if args.sweep:
        seeds = tuple(range(args.seed, args.seed + args.seeds))
        res = run_sweep(
            tuple(args.sigmas), seeds, args.max_steps or 30_000, not args.quiet, args.batched, **data_kwargs
        )
        save_fig3_sweep(res, out)
        if not args.quiet:
            print(sweep_summary(res, out))
        return 0
    canvases = []  # the figure's data part, drawn while the last training runs

    def draw_data(problems: list) -> None:
        from ..plots.fig3 import Fig3Canvas

        canvases.append(Fig3Canvas(problems, list(RUNS)))
        canvases[0].draw_ahead()

    res, problems, curves = run_fig3(
        args.seed, args.max_steps or 100_000, not args.quiet, meanwhile=draw_data, **data_kwargs
    )
    save_fig3(res, problems, curves, out, canvas=canvases[0])
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
