"""Rebuild the claim-by-claim report (REPORT.md and a self-contained report.html) of a reproduction from the JSON
files in --results alone (fig1.json, theorem.json, fig3.json, table1.json, fig2.json; any may be missing, and its
claims are then reported as not comparable). Nothing is retrained."""

from __future__ import annotations

import argparse

from .common import in_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, type=in_dir, help="results folder of memaware reproduce (--out)")
    p.add_argument("--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    report = write_report(args.results)
    if not args.quiet:
        print(summary(report))
    return 0


def summary(report: dict) -> str:
    failing = [c for c in report["claims"] if c.verdict == "does not hold"]
    lines = [f"report: {report['tally']} -> {report['markdown']}, {report['html']}"]
    lines += [f"  does not hold: {c.key}: {c.ours}" for c in failing]
    return "\n".join(lines)
