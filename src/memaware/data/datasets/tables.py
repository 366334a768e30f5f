"""Reading the text tables the dataset releases ship (CSV with a header, CelebA's whitespace lists, JSON lines),
column by column, with one-line ``DataError`` messages that name the file, the column and, where a column is
missing, what writes the file. No pandas: the standard library's ``csv`` and ``json`` are enough and much lighter.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...errors import DataError


@contextmanager
def reading_text(path: Path) -> Iterator[None]:
    """Turns the ways reading a text file fails into one-line ``DataError``s naming the file."""
    source = str(path)
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # some comments exceed csv's default 128 KiB field limit
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not a UTF-8 text file ({e.reason} at byte {e.start})") from e
    except csv.Error as e:
        raise DataError(f"{source}: malformed CSV ({e})".splitlines()[0]) from e
    except OSError as e:
        raise DataError(f"{source}: cannot read ({e.strerror or e})") from e
    finally:
        csv.field_size_limit(limit)


def read_csv_columns(
    path: Path, columns: Sequence[str], producer: str = "", index_column: bool = False, verbatim: Sequence[str] = ()
) -> dict[str, list[str]]:
    """The named ``columns`` of a CSV file with a header row, as lists of stripped strings (blank lines skipped;
    the ``verbatim`` columns, e.g. free text, are kept as they are).

    ``index_column``: the file was written by pandas with its index, so the first header cell may be empty; the
    first column is then returned under the name ``""``. ``producer`` says what writes the file, for the error
    when a column is missing. Line endings (LF, CRLF) and a UTF-8 byte-order mark are accepted."""
    source = str(path)
    if not path.is_file():
        raise DataError(f"{source}: no such file{f' ({producer})' if producer else ''}")
    with reading_text(path), open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{source}: empty file (expected a header with {', '.join(columns)})")
        header = [h.strip() for h in header]
        if index_column and header:
            header[0] = ""
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(
                f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}; found "
                f"{', '.join(h for h in header if h) or 'none'}{f' (expected the file {producer})' if producer else ''}"
            )
        width = len(header)
        index = [header.index(c) for c in columns]
        out: list[list[str]] = [[] for _ in columns]
        strip = [c not in verbatim for c in columns]
        n = 0
        for r in reader:  # streamed: only the wanted columns are kept (release files have ~40 columns)
            if not r:
                continue  # csv gives [] for blank lines (e.g. a trailing newline)
            n += 1
            if len(r) < width:
                raise DataError(f"{source}: data row {n} has {len(r)} fields, the header has {width}")
            for values, i, s in zip(out, index, strip, strict=True):
                values.append(r[i].strip() if s else r[i])
    if not n:
        raise DataError(f"{source}: no data rows after the header")
    return dict(zip(columns, out, strict=True))


def read_whitespace_table(path: Path, producer: str, count_line: bool) -> tuple[list[str], list[list[str]]]:
    """CelebA's published lists: optionally a count line, then (when ``count_line``) a header of names, then rows
    ``<filename> v1 v2 ...`` separated by runs of spaces (right-aligned values, trailing spaces, CRLF all accepted).
    Returns (header names, rows as lists of fields); the header is empty when the file has none."""
    source = str(path)
    if not path.is_file():
        raise DataError(f"{source}: no such file ({producer})")
    with reading_text(path), open(path, encoding="utf-8-sig") as f:
        lines = [line.split() for line in f]
    lines = [fields for fields in lines if fields]
    header: list[str] = []
    if count_line:
        if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
            raise DataError(f"{source}: expected a first line holding the number of images ({producer})")
        declared, header, lines = int(lines[0][0]), lines[1], lines[2:]
        if declared != len(lines):
            raise DataError(f"{source}: first line says {declared} images but {len(lines)} rows follow")
    if not lines:
        raise DataError(f"{source}: no data rows")
    width = len(header) + 1 if header else len(lines[0])
    bad = next((i for i, r in enumerate(lines) if len(r) != width), None)
    if bad is not None:
        raise DataError(f"{source}: data row {bad + 1} has {len(lines[bad])} fields, expected {width}")
    return header, lines


def read_json_lines(path: Path, keys: Sequence[str], producer: str) -> dict[str, list]:
    """The ``keys`` of every object in a JSON-lines file (one JSON object per line), as lists."""
    source = str(path)
    if not path.is_file():
        raise DataError(f"{source}: no such file ({producer})")
    out: dict[str, list] = {k: [] for k in keys}
    with reading_text(path), open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{source}: line {i + 1} is not JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{source}: line {i + 1} is not a JSON object")
            for k in keys:
                if k not in obj:
                    raise DataError(f"{source}: line {i + 1} has no field '{k}' ({producer})")
                out[k].append(obj[k])
    return out


def int_column(values: Sequence[str], column: str, source: str) -> np.ndarray:
    """Parses a column of integers ('3' or '3.0'); a one-line error names the first bad value and its row."""
    arr = np.asarray(values)
    try:
        return arr.astype(np.int64)
    except (ValueError, OverflowError):
        pass
    for i, v in enumerate(values):  # slow path, only on the way to an error or for '1.0'-style integers
        try:
            f = float(v)
        except ValueError:
            f = float("nan")
        if not (np.isfinite(f) and f == round(f)):
            raise DataError(f"{source}: column '{column}' must hold integers, found {v!r} in data row {i + 1}")
    return arr.astype(np.float64).astype(np.int64)


def threshold_column(values: Sequence[str], column: str, source: str, at: float = 0.5) -> np.ndarray:
    """A column of scores in [0, 1] as int64 ``score >= at``; an empty cell (pandas' NaN) counts as 0, as in
    pandas' ``(df[col] >= 0.5)``. A cell that is not a number is a one-line error."""
    out = np.zeros(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v == "" or v.lower() == "nan":
            continue
        try:
            out[i] = float(v) >= at
        except ValueError:
            raise DataError(f"{source}: column '{column}' must hold numbers, found {v!r} in data row {i + 1}") from None
    return out


def minus_one_one(values: Sequence[str], column: str, source: str) -> np.ndarray:
    """CelebA's attribute values (-1 absent, 1 present) as int64 0/1; anything else is a one-line error."""
    arr = np.asarray(values)
    good = (arr == "1") | (arr == "-1")
    if not good.all():
        i = int(np.argmin(good))
        raise DataError(f"{source}: column '{column}' must hold -1 or 1, found {values[i]!r} in data row {i + 1}")
    return (arr == "1").astype(np.int64)
