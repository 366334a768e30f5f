"""The training protocol of the scikit-learn estimators (``memaware.estimators``): their defaults, the rows they
hand to ``memaware.fit`` and the checks that refuse, before training, a choice that cannot work.

The defaults are ``memaware train --data``'s (``TrainConfig()`` and a head without bias), the protocol in which
MAT is known to work on the paper's Setup 2.1: full-batch SGD, lr 1e-2, 1000 epochs, torch's head initialisation,
the last epoch kept unless a validation part is held out. Reading them from ``TrainConfig`` keeps the estimators
and the command from drifting apart. See docs/estimators.md for the measurements behind them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.utils.validation import check_array, column_or_1d

from .data.groups import TRAIN, VAL, GroupData
from .engine import TrainConfig
from .errors import ConfigError, DataError
from .methods import Method

TEST = 2  # GroupData's test split code (data.groups names TRAIN and VAL)
CLI = TrainConfig()  # memaware train --data's settings (cli/train.py reads the same object)

# the estimators' training parameters, in signature order, with their defaults
TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": CLI.epochs,
    "lr": CLI.lr,
    "optimizer": CLI.optimizer,
    "momentum": CLI.momentum,
    "weight_decay": CLI.weight_decay,
    "batch_size": CLI.batch_size,
    "hidden": (),
    "activation": "relu",
    "bias": False,  # memaware train's --bias is off: the paper's model has none
    "init": CLI.init,
    "seed": CLI.seed,
    "validation_fraction": 0.0,
    "selection": "auto",
    "device": CLI.device,
}
# a method that cannot run without a held-out part (DFR retrains its last layer on it) holds out this much by default
HELD_OUT_DEFAULT = 0.2
# JTT's identification model needs some steps to learn the shortcut before it memorizes: fewer full-batch steps
# than this flag nearly a whole class as errors (measured on Setup 2.1: 1 step flags 394 of 1000, 10 steps the 100
# minority examples)
JTT_MIN_STEPS = 10


def default_validation_fraction(method_cls: type[Method]) -> float:
    """0 (keep the last epoch), or ``HELD_OUT_DEFAULT`` for a method that trains on validation groups (DFR)."""
    return HELD_OUT_DEFAULT if method_cls.needs_val_groups else 0.0


def group_attributes(a: Any, source: str) -> np.ndarray:
    """``a`` as a (n,) int64 array (whole-number floats and bools accepted); ``DataError`` otherwise."""
    a = column_or_1d(check_array(a, ensure_2d=False, dtype=None))  # NaN / inf: ValueError
    if a.dtype.kind not in "biuf" or (a.dtype.kind == "f" and not np.all(a == np.round(a))):
        raise DataError(f"{source}: the group attributes a must be integers (-1 = unknown), found dtype {a.dtype}")
    return a.astype(np.int64)


def validation_mask(y: np.ndarray, a: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """(n,) bool: about ``fraction`` of every class (and group) with two or more members, seeded."""
    mask = np.zeros(len(y), dtype=bool)
    if fraction == 0:
        return mask
    strata = y if a is None else y * (int(a.max()) + 2) + (a + 1)  # a = -1 is a stratum of its own
    rng = np.random.default_rng(seed)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        k = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
        mask[rng.permutation(idx)[:k]] = True
    if not mask.any():
        raise ConfigError(f"validation_fraction={fraction} leaves no validation example")
    return mask


def resolve_selection(method: Method, selection: str, val: np.ndarray, a: np.ndarray | None, name: str) -> str:
    """The criterion ``fit`` gets; a one-line ``ConfigError`` for a choice that cannot be computed.

    Without a validation part only ``last`` can be computed ('auto' becomes it). ``val_wga`` needs the group of
    every validation example (``fit(X, y, a=...)`` without -1); ``val_gi_wga`` a method that infers groups (XRM,
    MAT, uLA, XRM+GroupDRO); a method that trains on validation groups (DFR) needs both a validation part and ``a``.
    """
    held_out = bool(val.any())
    val_groups_known = a is not None and held_out and bool((a[val] >= 0).all())
    if method.needs_val_groups and not val_groups_known:
        raise ConfigError(
            f"{name}: method '{method.name}' trains on held-out group labels: set validation_fraction > 0 and "
            "call fit(X, y, a=...) with every group known"
        )
    if not held_out:
        if selection not in ("auto", "last"):
            raise ConfigError(f"selection '{selection}' needs a validation split: set validation_fraction > 0")
        return "last"
    if selection == "val_wga" and not val_groups_known:
        raise ConfigError(
            f"{name}: selection='val_wga' needs the group of every validation example: call fit(X, y, a=...) "
            "(no -1), or use selection='auto'"
        )
    if selection == "val_gi_wga" and not method.infers_groups:
        raise ConfigError(
            f"{name}: selection='val_gi_wga' needs inferred groups and method '{method.name}' infers none; "
            "use 'val_wga' with a=..., 'val_worst_class' or 'val_avg'"
        )
    return selection  # 'auto': fit picks val_wga, else val_gi_wga, else val_avg


def warn_unworkable(method: Method, batch_size: int, name: str) -> None:
    """A ``UserWarning`` for settings that train but cannot give the method's effect."""
    if method.name == "jtt" and batch_size == 0 and int(method.T) < JTT_MIN_STEPS:
        warnings.warn(
            f"{name}: T={method.T} full-batch epoch(s) is {method.T} optimiser step(s), too few for JTT's "
            f"identification model to learn the shortcut (its errors are then not the minority); "
            f"set T >= {JTT_MIN_STEPS} (e.g. 50 of 1000 epochs) or batch_size > 0",
            UserWarning,
            stacklevel=3,
        )


def group_data(
    X: np.ndarray, y: np.ndarray, a: np.ndarray | None, val: np.ndarray, num_classes: int, source: str
) -> GroupData:
    """The rows as a ``GroupData``: training, validation (``val``) and one stand-in test row.

    ``memaware.fit`` evaluates non-empty validation and test splits; without validation rows one copied training
    row stands in (selection 'last' never looks at it), and one copied row is the test split (never reported).
    """
    split = np.where(val, VAL, TRAIN).astype(np.int8)
    extra = [int(np.flatnonzero(val)[0]) if val.any() else 0]
    extra_split = [TEST] if val.any() else [VAL, TEST]
    rows = np.concatenate([np.arange(len(y)), np.array(extra * len(extra_split))])
    split = np.concatenate([split, np.array(extra_split, dtype=np.int8)])
    return GroupData.from_arrays(
        X[rows], y[rows], split, None if a is None else a[rows], source=source, num_classes=num_classes
    )
