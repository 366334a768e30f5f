"""Run the whole paper reproduction on built-in data: the Theorem 2.2 phase diagram, Table 1 (every method on the
offline analogues of Waterbirds, CelebA, MultiNLI and Setup 2.1), Fig. 2 (per-group memorization, ERM vs MAT),
Fig. 1 (interpretable setup) and Fig. 3 (good / bad / ugly memorization). Each stage writes its PNG + JSON into
--out; REPORT.md and report.html then say, claim by claim, whether the paper held on what was just run. --size
quick (default) fits about ten minutes on two CPU cores; --size full is BENCHMARKS.md's larger sweep (or --full)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..experiments.reproduce import EXPERIMENTS, SIZES, experiment_order
from .common import add_common

# seconds per stage of `make reproduce` (size quick, seed 0) from a fresh clone on a quiet 2-core machine, feature
# cache empty (BENCHMARKS.md, "Table 1 in the paper's regime on every analogue"): the closing summary compares
QUIET_SECONDS = {"theorem": 10.9, "table1": 371.3, "fig2": 57.2, "fig1": 3.1, "fig3": 10.3}
SLOWER = 1.5  # a machine this many times slower than the documented run is told so


def _stages(text: str) -> list[str]:
    """'table1,fig2' or 'table1' -> the stage names; argparse error for an unknown one."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"--only takes stages from {', '.join(EXPERIMENTS)}, got '{text}'")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument(
        "--only", nargs="+", type=_stages, default=None, metavar="STAGE",
        help=f"stages to run, space- or comma-separated (default: all): {', '.join(EXPERIMENTS)}",
    )  # fmt: skip
    p.add_argument(
        "--size", choices=SIZES, default="quick",
        help="Table 1 and Fig. 2 sizes: quick (minutes), full (BENCHMARKS.md's sweep: 10 combinations x 3 seeds, "
        "subsample audits on both FashionBirds pairs), smoke (seconds; checks the pipeline, numbers mean nothing)",
    )  # fmt: skip
    p.add_argument("--full", action="store_true", help="same as --size full")


def stage_line(name: str, res: dict[str, Any]) -> str:
    """One closing-summary line: the stage's main number."""
    if name == "theorem":
        return f"predicted = observed regime in {100 * (res.get('agreement') or 0):.1f} % of clear-cut cells"
    if name == "fig1":
        r = res["runs"]
        return "test minority: " + ", ".join(f"{k} {v['final']['test']['minority']:.3f}" for k, v in r.items())
    if name == "fig3":
        return "test MSE: " + ", ".join(f"{k} {v['test_mse']:.4f}" for k, v in res["runs"].items())
    if name == "table1":
        from ..report.claims import worst

        t = res["tables"]["val_wga"]
        parts = []
        for ds in res["analogues"]:
            e, m = worst(t, ds, "erm"), worst(t, ds, "mat")
            if e is not None and m is not None:
                parts.append(f"{ds} MAT {m:.1f} / ERM {e:.1f}")
        return "worst group (val_wga): " + "; ".join(parts)
    if name == "fig2":
        parts = []
        for p, v in res["panels"].items():
            ch = v.get("gap_change")
            if ch:
                parts.append(f"{p} gap {ch['erm_gap']:+.3f} -> {ch['mat_gap']:+.3f}")
        return "minority - majority memorization, ERM -> MAT: " + "; ".join(parts)
    return ""


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    size = "full" if args.full else args.size
    stages = experiment_order([s for group in (args.only or [list(EXPERIMENTS)]) for s in group])
    t0 = time.perf_counter()
    out = Path(args.out)
    say = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))
    timings = []
    for i, name in enumerate(stages, 1):
        say(f"== [{i}/{len(stages)}] {name} (memaware reproduce --only {name} --seed {args.seed} --size {size})")
        from ..experiments.reproduce import run_experiment

        t = time.perf_counter()
        # bars on a terminal only (tqdm writes to stderr): a log file keeps the stage lines and the summary
        bars = not args.quiet and sys.stderr.isatty()
        res = run_experiment(name, out, args.seed, progress=bars, size=size, log=say)
        timings.append((name, time.perf_counter() - t, stage_line(name, res)))
        say(f"   {name} done in {timings[-1][1]:.1f} s: {timings[-1][2]}")
    report = write_report(out, header=f"seed {args.seed}, size {size}, stages {', '.join(stages)}")
    say(summary(timings, report, out, time.perf_counter() - t0, size))
    return 0


def summary(
    timings: list[tuple[str, float, str]], report: dict[str, Any], out: Path, seconds: float, size: str = "quick"
) -> str:
    """The closing summary: seconds and main number per stage, beside the documented quiet seconds (size quick),
    with a sentence when this machine ran ``SLOWER`` times slower or more."""
    ref = QUIET_SECONDS if size == "quick" else {}
    lines = [
        f"reproduction done in {seconds:.1f} s -> {out}",
        f"{'stage':<9}{'seconds':>9}{'quiet':>8}  main number" if ref else f"{'stage':<9}{'seconds':>9}  main number",
    ]
    for name, sec, line in timings:
        quiet = f"{ref[name]:>8.1f}" if name in ref else ("" if not ref else f"{'-':>8}")
        lines.append(f"{name:<9}{sec:>9.1f}{quiet}  {line}")
    lines.append(f"report: {report['tally']} -> {report['markdown']}, {report['html']}")
    timed = [(sec, ref[name]) for name, sec, _ in timings if name in ref]
    took, documented = sum(t for t, _ in timed), sum(q for _, q in timed)
    if documented and took > SLOWER * documented:
        lines.append(
            f"note: these stages took {took / documented:.1f}x the seconds of the documented quiet 2-core run "
            f"({took:.0f} s vs {documented:.0f} s; 'quiet' column, BENCHMARKS.md): this machine is slower or loaded"
        )
    return "\n".join(lines)
