"""Run the whole paper reproduction on built-in data: Fig. 1 (interpretable setup), Fig. 3 (good / bad / ugly
memorization) and, where installed, the Theorem 2.2 phase diagram. Each writes its PNG + JSON into --out."""

from __future__ import annotations

import argparse
import time

# theorem first: fig1 and fig3 switch torch to one intra-op thread for the rest of the process (memaware.threads)
EXPERIMENTS = ("theorem", "fig1", "fig3")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_common

    add_common(p)
    p.add_argument(
        "--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS), help="experiments to run"
    )


def run(args: argparse.Namespace) -> int:
    from ..cli import COMMANDS, main

    available = {name for name, _, _ in COMMANDS}
    t0 = time.perf_counter()
    for name in sorted(args.only, key=EXPERIMENTS.index):
        if name not in available:
            continue
        if not args.quiet:
            print(f"== memaware {name} --out {args.out} --seed {args.seed}", flush=True)
        code = main([name, "--out", args.out, "--seed", str(args.seed), *(["--quiet"] if args.quiet else [])])
        if code:
            return code
    if not args.quiet:
        print(f"reproduction done in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0
