"""The ``memaware`` command. Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them up and turns bad input into one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import MemawareError

# (name, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("fig1", "memaware.experiments.fig1", "reproduce paper Fig. 1: ERM vs MAT on Setup 2.1 (noiseless / noisy)"),
    ("synth", "memaware.experiments.synth", "write a Setup 2.1 dataset as an .npz interchange file"),
    ("train", "memaware.experiments.train_cmd", "train ERM / XRM / MAT on your own .npz data"),
]


def add_common(parser: argparse.ArgumentParser, out_help: str = "output directory (created if missing)") -> None:
    """Flags every experiment takes: --out, --seed, --quiet."""
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same numbers (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memaware",
        description="Memorization-aware training and the experiments of 'The Pitfalls of Memorization'.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except MemawareError as e:
        print(f"memaware {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"memaware {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
