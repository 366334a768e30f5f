"""What every subcommand shares: the parser and help formatter classes, the common flags, and the checks that
answer a bad path or flag value before any work (argparse types: the parser answers with one line and exit 2).

Paths: ``out_dir`` (a directory that exists or can be created, writable, not a file), ``out_file`` (a file whose
folder is such a directory, and not itself a directory), ``in_file``, ``in_dir``, ``in_path`` (must exist).
Values: ``int_range`` / ``bound_int_flags`` (every integer flag in range; seeds 0..2**32-1), ``comma_items``
(comma lists without empty items). New commands use the same functions."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

SEED_MAX = 2**32 - 1  # numpy and torch seeds; larger values overflow
INT_MAX = 2**31 - 1  # counts, sizes, epochs, steps
NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs, tmpfs, APFS, NTFS)
MAX_SEED_COUNT = 10_000  # an integer --seeds is a number of seeds (0..N-1): more is a typo, and would never end


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


def _writable_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a directory we write into, or None. Nothing is created: the first
    existing ancestor decides (a file there, or no write permission / a read-only file system)."""
    p = Path(os.path.abspath(path))
    long = next((part for part in p.parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None:
        return f"{path}: a folder or file name of {len(long)} characters is longer than file systems allow ({NAME_MAX})"
    if p.exists():
        if not p.is_dir():
            return f"{path} is a file, not a directory"
        if not os.access(p, os.W_OK | os.X_OK):
            return f"{path} is not writable" + (" (read-only file system)" if _read_only(p) else "")
        return None
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"cannot create {path}: {parent} is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                ro = " (read-only file system)" if _read_only(parent) else ""
                return f"cannot create {path}: {parent} is not writable{ro}"
            return None
    return f"cannot create {path}"


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def out_dir(text: str) -> str:
    """argparse type of an output directory: exists or can be created, is writable, is not a file."""
    problem = _writable_dir_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def out_file(text: str) -> str:
    """argparse type of an output file: not a directory, and its folder exists or can be created, writable."""
    path = Path(text)
    if not text or path.is_dir() or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text or repr(text)} is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text} is not writable")
    problem = _writable_dir_problem(path.parent if str(path.parent) else Path("."))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def in_file(text: str) -> str:
    """argparse type of an input file: exists, is a file, readable (its content is checked by its reader)."""
    from ..data.files import not_a_file_reason

    path = Path(text)
    problem = not_a_file_reason(path)
    if problem == "is a directory, not a file":
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text} is not readable")
    return text


def in_dir(text: str) -> str:
    """argparse type of an input directory: exists and is a directory."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    return text


def in_data(text: str) -> str:
    """argparse type of --data: an .npz of features or a metadata table (.csv), both files, or a folder in
    torchvision's ImageFolder layout (train/CLASS/*.png, val/, test/)."""
    path = Path(text)
    if path.is_dir():
        return text
    if not path.exists() and not path.is_symlink():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return in_file(text)


TABLE_HELP = (
    "--data as a table: a .csv with columns filename (an image path relative to the CSV's folder or --image-root) "
    "or text, y, split (train/val/test or 0/1/2) and optional a (empty or -1: unknown); labels and attribute "
    "values may be names (sorted order); or a folder ROOT/{train,val,test}/CLASS/*.png"
)


def add_table_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options of a table given as --data (images: size, resize policy, normalisation); the choice made is
    printed and written into the run's record."""
    p.add_argument(
        "--image-root", type=in_dir, help="table: folder the image paths are relative to (default: the CSV's folder)"
    )
    p.add_argument(
        "--image-size", type=int, default=None, metavar="S",
        help="image side: a table's images are used at their own size when all share one (default), else resized to "
        "S x S with --resize; --dataset: 224 by default",
    )  # fmt: skip
    p.add_argument(
        "--resize", choices=("stretch", "crop"), default="stretch",
        help="with --image-size, how a table's images reach S x S: stretch = resize both sides (aspect not kept), "
        "crop = shorter side to S then the centre crop (default: stretch)",
    )  # fmt: skip
    p.add_argument(
        "--normalize", choices=("none", "imagenet"), default=None,
        help="a table's pixels: none = scaled to [0, 1]; imagenet = then ImageNet mean/std (default: imagenet for "
        "the pretrained resnet50 and efficientnet-lite0, none for every other backbone, yours included)",
    )  # fmt: skip


# end-to-end run settings (TrainConfig's precision, channels_last, compile, prefetch, augment; the dataset's decode
# cache)
SPEED_DEFAULTS = {
    "precision": "fp32", "channels_last": "auto", "compile": False, "prefetch": 2, "decode_cache": "auto",
    "augment": "none",
}  # fmt: skip


def add_speed_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How an end-to-end run (a backbone on a table or --dataset) computes and loads: none changes what is
    trained except --precision (and, by float rounding, --channels-last / --compile)."""
    p.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
        help="end to end: the backbone's forward under autocast (bf16; fp16 with a gradient scaler); heads and "
        "losses stay fp32. Default fp32, as the authors trained (docs/speed.md: what bf16 costs and buys)",
    )  # fmt: skip
    p.add_argument(
        "--channels-last", choices=("auto", "on", "off"), default="auto",
        help="end to end: channels-last memory order for image backbones (default auto: on CUDA only, where "
        "convolutions run faster in it)",
    )  # fmt: skip
    p.add_argument(
        "--compile", action="store_true", help="end to end: torch.compile the backbone (a first step that compiles)"
    )
    p.add_argument(
        "--prefetch", type=int_range(0, 64), default=2, metavar="BATCHES",
        help="end to end: batches loaded in the background while a step runs (0: each in its own step; default 2)",
    )  # fmt: skip
    p.add_argument(
        "--augment", choices=("none", "flip", "crop-flip"), default="none",
        help="end to end on images: random training augmentation on the decoded images: flip = horizontal flip, "
        "crop-flip = group_DRO's random crop of 70-100 %% of the area (aspect 3/4-4/3) resized back, then the flip "
        "(default none, as the authors' XRM/MAT pipeline)",
    )  # fmt: skip
    p.add_argument(
        "--decode-cache", choices=("auto", "memory", "disk", "off"), default="auto",
        help="end to end on images: decode every image once (auto: in memory, also written to the cache folder "
        "above 256 MiB, memory-mapped above a quarter of RAM; memory; disk; off = decode every batch again)",
    )  # fmt: skip


def speed_options(args: argparse.Namespace) -> dict:
    """The spec keys of ``add_speed_flags`` that differ from ``SPEED_DEFAULTS``: a spec with the defaults stays as
    it was before these flags existed, so earlier sweeps resume unchanged."""
    given = {
        "precision": args.precision, "channels_last": args.channels_last, "compile": bool(args.compile),
        "prefetch": args.prefetch, "decode_cache": args.decode_cache, "augment": args.augment,
    }  # fmt: skip
    return {k: v for k, v in given.items() if v != SPEED_DEFAULTS[k]}


def in_path(text: str) -> str:
    """argparse type of an input that may be a file or a directory (e.g. --weights): it must exist."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return text


def int_range(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes an integer, got '{text}'") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low} to {high})")
        return value

    parse.__name__ = "int"
    return parse


def real_range(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False
               ) -> Callable[[str], float]:  # fmt: skip
    """argparse type: a finite real number in the interval from ``low`` to ``high`` (open ends where said)."""
    left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
    shown = f"{left}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a number, got '{text}'") from None
        inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
        if not math.isfinite(value) or not inside:
            raise argparse.ArgumentTypeError(f"must be a finite number in {shown}, got '{text}'")
        return value

    parse.__name__ = "float"
    return parse


def bound_int_flags(parser: argparse.ArgumentParser) -> None:
    """Gives every ``type=int`` flag of ``parser`` a range: seeds 0..2**32-1, everything else (counts, sizes,
    epochs, steps, indices) 0..2**31-1, a number of seeds (an integer --seeds) 0..10000, so that 99999999999 or -3
    is one line, not a MemoryError later."""
    for action in parser._actions:  # argparse's own list of the parser's flags
        if action.type is int:
            high = {"seed": SEED_MAX, "seeds": MAX_SEED_COUNT}.get(action.dest, INT_MAX)
            action.type = int_range(0, high)


def comma_items(text: str, flag: str) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c'] (stripped); an empty item ('a,,b', 'a,') is an error, not skipped."""
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise argparse.ArgumentTypeError(f"{flag} takes a comma-separated list without empty items, got '{text}'")
    return items


def hidden_widths(text: str) -> tuple[int, ...]:
    """argparse type for --hidden: comma-separated layer widths, e.g. '256,256' (empty: a linear model)."""
    if not text.strip():
        return ()
    try:
        widths = tuple(int(w) for w in comma_items(text, "--hidden"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated integers, got '{text}'") from None
    if any(w < 1 or w > INT_MAX for w in widths):
        raise argparse.ArgumentTypeError(f"--hidden widths must be between 1 and {INT_MAX}, got '{text}'")
    return widths


def add_common(
    parser: argparse.ArgumentParser, out_help: str = "output directory (created if missing)", out_kind: str = "dir"
) -> None:
    """Flags every experiment takes: --out (a directory, or with ``out_kind='file'`` a file), --seed, --quiet."""
    parser.add_argument("--out", required=True, type=out_file if out_kind == "file" else out_dir, help=out_help)
    parser.add_argument(
        "--seed", type=int_range(0, SEED_MAX), default=0, help="random seed; the same seed gives the same numbers"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary on stdout")


__all__ = [
    "Parser", "Formatter", "hidden_widths", "add_common", "out_dir", "out_file", "in_file", "in_dir", "in_path",
    "int_range", "real_range", "bound_int_flags", "comma_items", "SEED_MAX", "INT_MAX", "MAX_SEED_COUNT",
]  # fmt: skip
