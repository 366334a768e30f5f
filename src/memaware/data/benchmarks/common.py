"""Helpers shared by the offline benchmarks: optional imports with an install hint (files inside installed packages
are found by ``memaware.packages``), seeded stratified splitting and subsampling, standardisation, and the cache."""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from ...artifacts import atomic_writer
from ...errors import ConfigError
from ..groups import TEST, TRAIN, VAL, GroupData

# What the benchmarks extra installs; named in every "not installed" message so that one line says what to do.
EXTRA_HINT = "pip install 'memaware[benchmarks]'"


def require(module: str, pip_line: str) -> ModuleType:
    """Imports ``module`` or raises a one-line ``ConfigError`` naming the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"the Python package '{module}' is not installed ({e.name}): {pip_line}") from None


def file_signature(path: Path) -> tuple[str, int, int]:
    """(absolute path, mtime in ns, size): a key for in-process memoisation of a parsed file that changes with it."""
    st = path.stat()
    return str(path.absolute()), st.st_mtime_ns, st.st_size


def default_cache_dir() -> Path:
    """``$MEMAWARE_CACHE_DIR`` or else ``~/.cache/memaware``: where slow-to-compute benchmark features (text
    embeddings) and decoded images are kept."""
    return Path(os.environ.get("MEMAWARE_CACHE_DIR") or "~/.cache/memaware").expanduser()


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def check_fraction(name: str, value: float, low_open: bool = True) -> float:
    """Validates a fraction in (0, 1] (``low_open``) or [0, 1)."""
    value = float(value)
    ok = 0.0 < value <= 1.0 if low_open else 0.0 <= value < 1.0
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1)"
        raise ConfigError(f"{name} must be in {interval}, got {value}")
    return value


def scaled(n: int, scale: float) -> int:
    """round(n * scale), at least 1: a subsampled benchmark keeps every group non-empty."""
    return max(1, int(round(n * scale)))


def stratified_take(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) labels -> sorted positions holding round(fraction * count) of every label value (at least 1 each)."""
    keep = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        keep.append(rng.permutation(members)[: scaled(len(members), fraction)])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def carve_validation(split: np.ndarray, group: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Moves round(fraction * count) training rows of every group to validation (seeded); returns the new split.

    Stratifying by group keeps the validation split's group proportions equal to the training split's, so that
    worst-group model selection sees every group, including the smallest.
    """
    split = split.copy()
    train = np.flatnonzero(split == TRAIN)
    for g in np.unique(group[train]):
        members = rng.permutation(train[group[train] == g])
        n_val = int(round(fraction * len(members)))
        if len(members) > 1:  # a group of one stays in train
            n_val = min(max(n_val, 1), len(members) - 1)
            split[members[:n_val]] = VAL
    return split


def standardize_columns(x: np.ndarray, split: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) float32 with zero mean and unit variance per column over the *training* rows only.

    Statistics from train alone so that no validation or test information leaks into the features; constant
    columns are only centred.
    """
    train = x[split == TRAIN].astype(np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std < 1e-12] = 1.0
    return ((x - mean) / std).astype(np.float32)


def to_group_data(x: np.ndarray, y: np.ndarray, a: np.ndarray, split: np.ndarray, source: str) -> GroupData:
    """Validated ``GroupData`` (two classes, two attribute values) from (n, d) x and (n,) y, a, split."""
    return GroupData.from_arrays(x, y, split, a, source=source, num_classes=2, require_splits=(TRAIN, VAL, TEST))


def group_counts(data: GroupData) -> dict[str, list[int]]:
    """{"train"|"val"|"test": [count of group 0, 1, ...]} (group id = y * A + a)."""
    out = {}
    for name, s in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        g = data.group[data.split == s]
        out[name] = np.bincount(g.numpy(), minlength=data.num_groups).tolist()
    return out


def load_cached_array(path: Path, rows: int) -> np.ndarray | None:
    """The cached (rows, d) array at ``path``, or None when absent, unreadable or of another length (recompute)."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.ndim != 2 or arr.shape[0] != rows or not np.isfinite(arr).all():
        return None
    return arr


def save_cached_array(path: Path, arr: np.ndarray) -> bool:
    """Writes ``arr`` as .npy atomically (a concurrent reader never sees half a file); False if it cannot.

    A cache that cannot be written (read-only home, full disk) costs time on the next run, never the result, so the
    caller warns and goes on.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr)

    try:
        atomic_writer(path, write, ".npy")
    except OSError as e:
        warnings.warn(f"{path}: could not write the feature cache ({e.strerror}); it will be recomputed", stacklevel=3)
        return False
    return True
