"""Paper Table 1 from one or more sweep directories (memaware sweep): rows = methods, with the group labels they
use in training (e_tr) and in model selection (e_va); columns = datasets x {Avg, Worst}: test accuracy in %, mean
+- std over seeds of the run that the validation criterion chooses among the hyper-parameter combinations of each
seed. Also draws a bar chart of test worst-group accuracy (PNG). Runs that are planned but have no results are
listed on stderr, and the table shows what exists. Runs that logged their evaluations (evaluations.npz) are
re-selected by any registered criterion, without retraining."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import MemawareError
from ..plots.table import plot_table
from ..selection import criterion_names, get_criterion
from ..sweep.table import PROTOCOLS, build_table
from ..sweep.table_format import format_table, missing_text
from ..sweep.table_runs import collect_runs
from .common import in_dir, out_file

FORMATS = ("md", "csv", "latex", "json")


def _criterion(name: str) -> str:
    """argparse type for --selection: a registered criterion, an old spelling, or package.module:Class."""
    try:
        get_criterion(name)
    except MemawareError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sweep", nargs="+", required=True, type=in_dir, metavar="DIR", help="sweep directories (memaware sweep --out)"
    )
    # the choices are read from the registry when the parser is built, so criteria registered before then count
    p.add_argument(
        "--selection",
        type=_criterion,
        default="val_wga",
        metavar="CRITERION",
        help="criterion choosing each seed's run (and, for runs with evaluations.npz, its evaluation): "
        f"{', '.join(criterion_names())} (test_wga is an oracle, for diagnostics); old spellings "
        "va_wga, va_gi_wga, worst_class, avg work too; or package.module:Class (a memaware.selection.Criterion)",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="per-seed",
        help="per-seed: best combination for each seed; first-seed: the first seed's best for all (authors' code)",
    )
    p.add_argument("--format", choices=FORMATS, default="md", help="table format")
    p.add_argument("--out", default=None, type=out_file, help="write the table to this file (default: stdout)")
    p.add_argument(
        "--plot",
        default=None,
        type=out_file,
        help="bar chart PNG (default: --out with .png, else DIR/table_<criterion>.png in the first --sweep, named "
        "by the criterion's registered name: --selection va_wga writes table_val_wga.png)",
    )
    p.add_argument("--no-plot", action="store_true", help="no bar chart")


def run(args: argparse.Namespace) -> int:
    runs = collect_runs(args.sweep)
    table = build_table(runs, args.selection, args.protocol)
    note = missing_text(table)
    if note:
        print(note, file=sys.stderr)
    if not runs.records:
        print(f"memaware table: no runs found under {', '.join(args.sweep)}", file=sys.stderr)
        return 1
    text = format_table(table, args.format)
    if args.out:
        from ..artifacts import atomic_writer

        atomic_writer(args.out, lambda p: p.write_text(text), Path(args.out).suffix)
    else:
        sys.stdout.write(text)
    if not args.no_plot:
        if args.plot:
            plot = Path(args.plot)
        elif args.out:
            plot = Path(args.out).with_suffix(".png")
        else:
            plot = Path(args.sweep[0]) / f"table_{table.criterion}.png"
        plot_table(table, plot)
        dest = sys.stderr if not args.out else sys.stdout
        print(f"table: bar chart -> {plot}" + (f", table -> {args.out}" if args.out else ""), file=dest)
    elif args.out:
        print(f"table: -> {args.out}")
    return 0
