"""A user's own dataset from one metadata table: ``load_table(PATH.csv)`` (or a folder in torchvision's
ImageFolder layout, ``table_folders``).

The CSV has a header and one row per example:
- ``filename``: an image path relative to the CSV's folder (or to ``image_root``), any format PIL opens; or
  ``text``: the example's text (exactly one of the two);
- ``y``: the label, integers 0..K-1 or class names (mapped to 0..K-1 in sorted order);
- ``split``: ``train`` / ``val`` (also ``valid``, ``validation``, ``dev``) / ``test``, or 0 / 1 / 2;
- ``a`` (optional): the group attribute, integers >= 0 or names (sorted order); empty or -1 = unknown.
Other columns are ignored. Every problem is one ``DataError`` line naming the file, the data row and the column,
raised before any training: a missing column, an unknown split name, an empty label, a label found in one split
only, a missing or unreadable image, images of different sizes without ``image_size``.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..groups import SPLIT_NAMES, TEST, TRAIN, VAL
from .common import MAX_ROWS
from .tables import read_csv_columns, reading_text

SPLIT_CODES = {
    "train": TRAIN, "training": TRAIN, "0": TRAIN,
    "val": VAL, "valid": VAL, "validation": VAL, "dev": VAL, "1": VAL,
    "test": TEST, "testing": TEST, "2": TEST,
}  # fmt: skip
UNKNOWN_ATTR = ("", "-1")
_INT = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Table:
    """A parsed, validated metadata table: per-row ``inputs`` (image paths relative to ``base`` or texts), int64
    ``y``, ``split``, ``a`` (-1 unknown), and the names of the label and attribute values (index = code)."""

    path: Path
    modality: str  # 'image' (inputs are file names) or 'text'
    inputs: list[str]
    y: np.ndarray
    split: np.ndarray
    a: np.ndarray
    label_names: list[str]
    attr_names: list[str] | None
    base: Path | None = None  # the folder image paths are relative to


def read_header(path: Path) -> list[str]:
    """The header cells of a CSV file (stripped); one-line errors for an unreadable or empty file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (a metadata table with columns filename or text, y, split[, a])")
    with reading_text(path), open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise DataError(f"{path}: empty file (expected a header: filename or text, y, split[, a])")
    return [h.strip() for h in header]


def table_modality(path: str | os.PathLike) -> str:
    """'image' or 'text', from the table's header alone (a folder is an ImageFolder tree: 'image')."""
    path = Path(path).expanduser()
    if path.is_dir():
        return "image"
    header = read_header(path)
    if "filename" in header and "text" in header:
        raise DataError(f"{path}: has both a 'filename' and a 'text' column; keep the one that holds the inputs")
    if "filename" in header:
        return "image"
    if "text" in header:
        return "text"
    found = ", ".join(h for h in header if h) or "none"
    raise DataError(f"{path}: missing column 'filename' (image paths) or 'text'; found {found}")


def split_codes(values: list[str], source: str) -> np.ndarray:
    """Split names or codes -> int8 codes (0 train, 1 val, 2 test)."""
    out = np.empty(len(values), dtype=np.int8)
    for i, v in enumerate(values):
        code = SPLIT_CODES.get(v.lower())
        if code is None:
            raise DataError(
                f"{source}: data row {i + 1}, column 'split': unknown split {v!r} (use train, val or test, or 0, 1, 2)"
            )
        out[i] = code
    return out


def encode(values: list[str], column: str, source: str, unknown: tuple[str, ...] = ()) -> tuple[np.ndarray, list[str]]:
    """A label column -> (int64 codes, names). Integers stay as they are (names are their decimal text); any
    non-integer value makes the column one of names, coded in sorted order. ``unknown`` values code to -1."""
    known = [v for v in values if v not in unknown]
    if not known:
        return np.full(len(values), -1, dtype=np.int64), []
    if all(_INT.match(v) for v in known):
        ints = {v: int(v) for v in set(known)}
        bad = next((i for i, v in enumerate(values) if v not in unknown and ints[v] < 0), None)
        if bad is not None:
            raise DataError(
                f"{source}: data row {bad + 1}, column '{column}': {values[bad]} is negative (labels are 0..K-1"
                + (", -1 or empty = unknown)" if unknown else ")")
            )
        codes = np.array([ints[v] if v not in unknown else -1 for v in values], dtype=np.int64)
        return codes, [str(k) for k in range(int(codes.max()) + 1)]
    names = sorted(set(known))
    index = {name: k for k, name in enumerate(names)}
    return np.array([index.get(v, -1) for v in values], dtype=np.int64), names


def check_labels(y: np.ndarray, split: np.ndarray, names: list[str], source: str) -> None:
    """Every split present; integer labels without a gap; every label in more than one split."""
    for s in (TRAIN, VAL, TEST):
        if not (split == s).any():
            raise DataError(f"{source}: column 'split' has no {SPLIT_NAMES[s]} rows (need train, val and test)")
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{source}: column 'y' has a single label {names[int(present[0])]!r}; need two or more")
    absent = sorted(set(range(len(names))) - set(present.tolist()))
    if absent:
        raise DataError(
            f"{source}: column 'y' has integer labels up to {len(names) - 1} but none equal to {absent[0]}: use "
            "0..K-1 without a gap, or class names"
        )
    for k in present.tolist():
        where = np.unique(split[y == k])
        if len(where) == 1:
            row = int(np.argmax(y == k))
            raise DataError(
                f"{source}: data row {row + 1}, column 'y': label {names[k]!r} appears in the "
                f"{SPLIT_NAMES[int(where[0])]} split only (a typo? every class needs examples in two splits or more)"
            )


def read_table(path: str | os.PathLike) -> Table:
    """Parses and validates a metadata CSV (module docstring); image files are checked by ``table_images``."""
    path = Path(path).expanduser()
    source = str(path)
    modality = table_modality(path)
    header = read_header(path)
    inputs_col = "filename" if modality == "image" else "text"
    missing = [c for c in ("y", "split") if c not in header]
    if missing:
        found = ", ".join(h for h in header if h)
        raise DataError(f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}; found {found}")
    columns = [inputs_col, "y", "split"] + (["a"] if "a" in header else [])
    cols = read_csv_columns(path, columns, verbatim=("text",))
    if len(cols["y"]) >= MAX_ROWS:
        raise DataError(f"{source}: {len(cols['y'])} rows; at most {MAX_ROWS - 1} are supported")
    empty = next((i for i, v in enumerate(cols["y"]) if not v), None)
    if empty is not None:
        raise DataError(f"{source}: data row {empty + 1}, column 'y': empty label")
    if modality == "image":
        empty = next((i for i, v in enumerate(cols["filename"]) if not v.strip()), None)
        if empty is not None:
            raise DataError(f"{source}: data row {empty + 1}, column 'filename': empty file name")
    split = split_codes(cols["split"], source)
    y, label_names = encode(cols["y"], "y", source)
    check_labels(y, split, label_names, source)
    a, attr_names = encode(cols["a"], "a", source, UNKNOWN_ATTR) if "a" in cols else (np.full(len(y), -1), None)
    return Table(
        path=path, modality=modality, inputs=cols[inputs_col], y=y, split=split, a=a.astype(np.int64),
        label_names=label_names, attr_names=attr_names or None, base=path.parent,
    )  # fmt: skip


__all__ = ["Table", "read_table", "read_header", "table_modality", "split_codes", "encode", "check_labels",
           "SPLIT_CODES"]  # fmt: skip
