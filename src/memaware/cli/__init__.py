"""The ``memaware`` command: a thin argparse layer over the library. Each subcommand lives in its own module,
``memaware.cli.<name>``, exposing ``add_arguments(parser)``, ``run(args) -> int`` and a human ``summary(...)``; it
validates its arguments and calls the library (``experiments``, ``sweep``, ``data``, ...), nothing more. This file
only wires them up, imports only the module of the command that runs (each pulls in torch, matplotlib, ... as it
needs), and turns bad input into one line on stderr and exit code 2. Shared flags and classes: ``cli.common``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ..errors import DivergenceError, MemawareError, io_failure
from .common import Formatter, Parser, add_common, bound_int_flags, hidden_widths

# (name, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    (
        "reproduce",
        "memaware.cli.reproduce",
        "run the whole paper reproduction (theorem, table1, fig2, fig1, fig3) and its claim report into --out",
    ),
    ("report", "memaware.cli.report", "rebuild the claim-by-claim report of a reproduction from its JSON files"),
    (
        "fig1",
        "memaware.cli.fig1",
        "reproduce paper Fig. 1: ERM vs MAT on Setup 2.1 (noiseless / noisy)",
    ),
    ("synth", "memaware.cli.synth", "write a Setup 2.1 dataset as an .npz interchange file"),
    ("synth-images", "memaware.cli.synth_images", "write a small spurious image problem: PNGs + metadata.csv"),
    ("train", "memaware.cli.train", "train a method (MAT, ERM, GroupDRO, ...) on an .npz or real data"),
    (
        "fig3",
        "memaware.cli.fig3",
        "reproduce paper Fig. 3: good / bad / ugly memorization in regression",
    ),
    ("theorem", "memaware.cli.theorem", "Theorem 2.2 phase diagram: exact ERM vs fixed point"),
    (
        "memorization",
        "memaware.cli.memorization",
        "memorization audit per group, ERM vs MAT (Fig. 2)",
    ),
    (
        "features",
        "memaware.cli.features",
        "embed a real dataset (Waterbirds, CelebA, MultiNLI, CivilComments) with a backbone into an .npz",
    ),
    (
        "datasets",
        "memaware.cli.datasets",
        "say which dataset layouts are under --data-dir: rows per split and group, missing files; --export",
    ),
    (
        "convert-multinli",
        "memaware.cli.convert_multinli",
        "convert MultiNLI's pickled GLUE feature caches into plain arrays, once",
    ),
    (
        "sweep",
        "memaware.cli.sweep",
        "random hyper-parameter search over methods and seeds (Table 1)",
    ),
    (
        "table",
        "memaware.cli.table",
        "Table 1 from sweep directories: mean +- std over seeds, bar chart",
    ),
    (
        "prepare",
        "memaware.cli.prepare",
        "build an offline real-data benchmark (fashionbirds, adult-sex, finefoods-negation) into an .npz",
    ),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (each pulls in torch, matplotlib, ... as it needs)."""
    parser = Parser(
        prog="memaware",
        description="Memorization-aware training and the experiments of 'The Pitfalls of Memorization'.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(mod.__doc__ or help_text).strip(),
            formatter_class=Formatter,
        )
        mod.add_arguments(p)
        bound_int_flags(p)  # every integer flag in range, answered by the parser before any work
        p.set_defaults(_run=mod.run, _resume_hint=getattr(mod, "RESUME_HINT", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {name for name, _, _ in COMMANDS}
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in names else None)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except MemawareError as e:
        print(f"memaware {args.command}: error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"memaware {args.command}: error: {e}", file=sys.stderr)
        return 3
    except OSError as e:  # the machine's, not the input's: disk full, a file system gone read-only, ...
        print(f"memaware {args.command}: error: {io_failure(e)}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        hint = getattr(args, "_resume_hint", None)
        print(f"memaware {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130


def console_main() -> int:
    """The ``memaware`` program (console script and ``python -m memaware``): ``main``, then a quick exit.

    An interpreter that imported torch spends 0.3-0.5 s tearing itself down at exit (a last garbage collection
    over torch's objects, then every module's deallocation; BENCHMARKS.md), a tenth of a ``memaware fig3``. When
    ``main`` has returned and no other thread runs, nothing is left to do but the exit handlers: they run (temporary
    folders, pools), the standard streams are flushed and the process ends with ``os._exit``. Every file memaware
    writes is closed by then (``with`` blocks, ``artifacts``). ``main`` itself stays free of this, for callers that
    go on running."""
    import atexit
    import gc
    import threading

    code = main()
    gc.freeze()  # with another thread alive, the normal exit below at least skips the last full collection
    if threading.active_count() == 1:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`memaware ... | head`) or stream: nothing to keep
                pass
        os._exit(code)
    return code


__all__ = ["COMMANDS", "build_parser", "main", "console_main", "add_common", "hidden_widths"]
