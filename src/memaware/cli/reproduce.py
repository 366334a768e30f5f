"""Run the whole paper reproduction on built-in data: Fig. 1 (interpretable setup), Fig. 3 (good / bad / ugly
memorization) and the Theorem 2.2 phase diagram, at their defaults. Each writes its PNG + JSON into --out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..experiments.reproduce import EXPERIMENTS, experiment_order, run_experiment
from . import fig1, fig3, theorem
from .common import add_common

SUMMARIES = {"theorem": theorem.summary, "fig1": fig1.summary, "fig3": fig3.summary}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument(
        "--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS), help="experiments to run"
    )


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = Path(args.out)
    for name in experiment_order(args.only):
        if not args.quiet:
            print(f"== memaware {name} --out {args.out} --seed {args.seed}", flush=True)
        res = run_experiment(name, out, args.seed, progress=not args.quiet)
        if not args.quiet:
            print(SUMMARIES[name](res, out), flush=True)
    if not args.quiet:
        print(summary(args.out, time.perf_counter() - t0))
    return 0


def summary(out: str, seconds: float) -> str:
    return f"reproduction done in {seconds:.1f} s -> {out}"
