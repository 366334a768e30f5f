"""What every subcommand shares: the parser and help formatter classes and the common flags."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """Bad flags get one line (no usage dump) and exit code 2, like bad data."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
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


__all__ = ["Parser", "Formatter", "hidden_widths", "add_common"]
