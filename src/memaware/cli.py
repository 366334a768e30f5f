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
    (
        "reproduce",
        "memaware.experiments.reproduce",
        "run the paper reproduction (fig1, fig3, theorem) into --out",
    ),
    (
        "fig1",
        "memaware.experiments.fig1",
        "reproduce paper Fig. 1: ERM vs MAT on Setup 2.1 (noiseless / noisy)",
    ),
    ("synth", "memaware.experiments.synth", "write a Setup 2.1 dataset as an .npz interchange file"),
    ("train", "memaware.experiments.train_cmd", "train a method (MAT, ERM, GroupDRO, ...) on an .npz or real data"),
    (
        "fig3",
        "memaware.experiments.fig3",
        "reproduce paper Fig. 3: good / bad / ugly memorization in regression",
    ),
    ("theorem", "memaware.experiments.theorem", "Theorem 2.2 phase diagram: exact ERM vs fixed point"),
    (
        "memorization",
        "memaware.experiments.memorization_cmd",
        "memorization audit per group, ERM vs MAT (Fig. 2)",
    ),
    (
        "features",
        "memaware.experiments.features_cmd",
        "embed a real dataset (Waterbirds, CelebA, MultiNLI, CivilComments) with a backbone into an .npz",
    ),
    (
        "convert-multinli",
        "memaware.experiments.convert_multinli",
        "convert MultiNLI's pickled GLUE feature caches into plain arrays, once",
    ),
    (
        "sweep",
        "memaware.experiments.sweep_cmd",
        "random hyper-parameter search over methods and seeds (Table 1)",
    ),
    (
        "table",
        "memaware.experiments.table_cmd",
        "Table 1 from sweep directories: mean +- std over seeds, bar chart",
    ),
    (
        "prepare",
        "memaware.experiments.prepare_cmd",
        "build an offline real-data benchmark (fashionbirds, adult-sex, finefoods-negation) into an .npz",
    ),
]


class _Parser(argparse.ArgumentParser):
    """Bad flags get one line (no usage dump) and exit code 2, like bad data."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where it says something (not for required flags or switches)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        d = action.default
        if (
            d is None
            or d is False
            or d is argparse.SUPPRESS
            or (isinstance(d, tuple) and not d)
            or action.required
        ):
            return action.help or ""
        return super()._get_help_string(action)


def hidden_widths(text: str) -> tuple[int, ...]:
    """argparse type for --hidden: comma-separated layer widths, e.g. '256,256' (empty: a linear model)."""
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated integers, got '{text}'") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"--hidden widths must be >= 1, got '{text}'")
    return widths


def add_common(
    parser: argparse.ArgumentParser, out_help: str = "output directory (created if missing)"
) -> None:
    """Flags every experiment takes: --out, --seed, --quiet."""
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same numbers"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary on stdout")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (each pulls in torch, matplotlib, ... as it needs)."""
    parser = _Parser(
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
            formatter_class=_Formatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
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
    except KeyboardInterrupt:
        print(f"memaware {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
