"""The evaluation log of one run (``run_dir/evaluations.npz``): one row per evaluation, enough to compute every
selection criterion after training (``memaware.selection``), including criteria written after the run.

Per evaluation t it keeps the validation predictions themselves (validation criteria need per-example correctness,
and a criterion added later may group the examples differently) but only hit counts on the test split (test is never
used to choose, only reported). The log is numpy throughout, so reading and scoring one never imports torch; a
training run appends torch tensors, counted where they are. Arrays (``np.savez``, read with ``allow_pickle=False``):

========================  ==============  ===================================================================
``epoch``, ``step``       (T,) int64      when each evaluation happened
``val_pred``              (T, n_val) i16  predicted class of every validation example
``val_y``, ``val_a``      (n_val,) int64  validation labels and attributes (-1 unknown)
``val_inferred``          (T, n_val) i64  the method's own inferred validation groups (y * 2 + flag); only when
                                          the method infers groups; a row of -1 = none at that evaluation
``test_group_hits``       (T, G) int64    correct test examples per group y * A + a (examples with a >= 0)
``test_group_counts``     (G,) int64      test examples per group
``test_class_hits``       (T, K) int64    correct test examples per class; ``test_class_counts`` (K,)
``test_hits``             (T,) int64      correct test examples; ``test_n`` () their number
``num_classes``, ``num_attrs``            K and A (G = K * A)
``val_groups_complete``   () bool         every group present in training has validation examples
========================  ==============  ===================================================================
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import is_tensor, to_numpy
from .artifacts import atomic_writer
from .errors import DataError
from .metrics import ArrayLike, group_ids, hit_counts

FILENAME = "evaluations.npz"
VERSION = 1
# key -> number of dimensions; ``_check`` then checks the shapes against each other
_LAYOUT = (
    dict.fromkeys(("test_n", "num_classes", "num_attrs", "val_groups_complete"), 0)
    | dict.fromkeys(("epoch", "step", "val_y", "val_a", "test_group_counts", "test_class_counts", "test_hits"), 1)
    | dict.fromkeys(("val_pred", "test_group_hits", "test_class_hits"), 2)
)
_ROWS = ("epoch", "step", "val_pred", "val_inferred", "test_group_hits", "test_class_hits", "test_hits")


def _long(v: ArrayLike) -> np.ndarray:
    """Any array-like or tensor (on any device) as an int64 numpy array: logs live on the CPU, in numpy, whatever
    the run trains on, so that reading one never needs torch."""
    return to_numpy(v).astype(np.int64, copy=False)


class EvalLog:
    """Evaluations of one run. Build it with ``start`` (or ``start_many``), ``append`` one row per evaluation, then
    ``save``; ``load`` reads a saved log (which can be scored but not appended to: it has no test labels).

    Everything is kept as numpy arrays on the CPU (``append`` takes torch tensors on any device as well as arrays).
    Row accessors (``val_pred_at(t)`` ...) cost nothing per call, so an online selector can score evaluation t
    right after appending it; ``stacked(key)`` gives the (T, ...) arrays.
    """

    def __init__(
        self,
        val_y: ArrayLike,
        val_a: ArrayLike,
        test_group_counts: ArrayLike,
        test_class_counts: ArrayLike,
        test_n: int,
        num_classes: int,
        num_attrs: int,
        val_groups_complete: bool,
        test_labels: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        """Low level (``start`` / ``load`` call it). ``test_labels``: (test group id or -1 (n_test,), test y
        (n_test,)) int64 arrays, needed only to append."""
        self.val_y, self.val_a = _long(val_y), _long(val_a)
        self.test_group_counts, self.test_class_counts = _long(test_group_counts), _long(test_class_counts)
        self.test_n, self.num_classes, self.num_attrs = int(test_n), int(num_classes), int(num_attrs)
        self.val_groups_complete = bool(val_groups_complete)
        self.test_labels = test_labels
        self.rows: dict[str, list] = {k: [] for k in _ROWS}
        self._stacked: dict[str, np.ndarray | None] = {}

    # ---- construction ----------------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        val_y: ArrayLike,
        val_a: ArrayLike,
        test_y: ArrayLike,
        test_a: ArrayLike,
        num_classes: int,
        num_attrs: int,
        train_groups_present: ArrayLike | Sequence[int],
    ) -> EvalLog:
        """An empty log for one run. Labels (n,) int, a = -1 where unknown. ``train_groups_present``: (G,) bool mask
        of the groups y * A + a with training examples, or their ids (unknown training attributes are no group)."""
        if num_classes > np.iinfo(np.int16).max:
            raise DataError(f"evaluation log: {num_classes} classes do not fit the int16 predictions")
        K, A = int(num_classes), int(num_attrs)
        G = K * A
        val_y, val_a, test_y, test_a = (_long(v) for v in (val_y, val_a, test_y, test_a))
        present = to_numpy(train_groups_present)
        if present.dtype == np.bool_:
            mask = present
        else:  # group ids
            ids = present.astype(np.int64)
            mask = np.zeros(G, dtype=np.bool_)
            mask[ids[(ids >= 0) & (ids < G)]] = True
        if mask.shape != (G,):
            raise ValueError(f"train_groups_present: a ({G},) mask or group ids, got shape {tuple(mask.shape)}")
        val_g = group_ids(val_y, val_a, A)
        in_val = np.bincount(val_g[val_g >= 0], minlength=G)[:G] > 0
        complete = bool((in_val | ~mask).all())
        test_g = group_ids(test_y, test_a, A)
        return cls(
            val_y,
            val_a,
            np.bincount(test_g[test_g >= 0], minlength=G)[:G],
            np.bincount(test_y, minlength=K)[:K],
            len(test_y),
            K,
            A,
            complete,
            test_labels=(test_g, test_y),
        )

    @classmethod
    def start_many(cls, count: int, *args: Any, **kwargs: Any) -> list[EvalLog]:
        """``count`` empty logs on the same data (``start``'s arguments), sharing their label arrays."""
        first = cls.start(*args, **kwargs)
        logs = [first]
        for _ in range(count - 1):
            log = cls(
                first.val_y,
                first.val_a,
                first.test_group_counts,
                first.test_class_counts,
                first.test_n,
                first.num_classes,
                first.num_attrs,
                first.val_groups_complete,
                first.test_labels,
            )
            logs.append(log)
        return logs

    # ---- appending -------------------------------------------------------------------------------------------
    def append(
        self,
        epoch: int,
        step: int,
        val_pred: ArrayLike,
        test_pred: ArrayLike,
        val_inferred: ArrayLike | None = None,
    ) -> None:
        """One evaluation: predicted classes ``val_pred`` (n_val,), ``test_pred`` (n_test,); ``val_inferred``
        (n_val,) the method's inferred validation groups at this evaluation, or None."""
        val_pred, test_pred = (v if is_tensor(v) else np.asarray(v) for v in (val_pred, test_pred))
        EvalLog.append_many([self], epoch, step, val_pred[None], test_pred[None], [val_inferred])

    @staticmethod
    def append_many(
        logs: Sequence[EvalLog],
        epoch: int,
        step: int,
        val_pred: ArrayLike,
        test_pred: ArrayLike,
        val_inferred: ArrayLike | Sequence[ArrayLike | None] | None = None,
    ) -> None:
        """One evaluation of C runs on the same data (``start_many``): ``val_pred`` (C, n_val), ``test_pred``
        (C, n_test), ``val_inferred`` None, (C, n_val) or a list of C (n_val,)-or-None; appends row c to logs[c].
        Test hits are counted for all C at once, where the predictions are (``metrics.hit_counts``)."""
        first = logs[0]
        if first.test_labels is None:
            raise ValueError("this evaluation log was loaded from a file: it has no test labels to append with")
        test_g, test_y = first.test_labels
        for log in logs[1:]:
            if log.test_labels is not first.test_labels and not (
                log.test_labels is not None and all(map(np.array_equal, log.test_labels, first.test_labels))
            ):
                raise ValueError("append_many: the logs were started on different data")
        C, n_val = len(logs), len(first.val_y)
        val_pred = _long(val_pred)
        test_pred = test_pred if is_tensor(test_pred) else np.asarray(test_pred)
        if val_pred.shape != (C, n_val) or tuple(test_pred.shape) != (C, first.test_n):
            raise ValueError(
                f"append_many: expected val_pred ({C}, {n_val}) and test_pred ({C}, {first.test_n}), "
                f"got {tuple(val_pred.shape)} and {tuple(test_pred.shape)}"
            )
        group_hits, class_hits, hits = hit_counts(test_pred, test_y, test_g, first.num_groups, first.num_classes)
        inferred = [None] * C if val_inferred is None else list(val_inferred)
        if len(inferred) != C:
            raise ValueError(f"append_many: {len(inferred)} inferred-group vectors for {C} runs")
        preds = val_pred.astype(np.int16)
        for c, log in enumerate(logs):  # only list appends here: the counting above is batched
            inf = None if inferred[c] is None else _long(inferred[c])
            if inf is not None and inf.shape != (n_val,):
                raise ValueError(
                    f"append_many: inferred groups of run {c} have shape {tuple(inf.shape)}, not ({n_val},)"
                )
            log._add(int(epoch), int(step), preds[c], inf, group_hits[c], class_hits[c], hits[c])

    def _add(self, epoch: int, step: int, val_pred, val_inferred, group_hits, class_hits, hits) -> None:
        row = (epoch, step, val_pred, val_inferred, group_hits, class_hits, hits)
        for key, value in zip(_ROWS, row, strict=True):
            self.rows[key].append(value)
        self._stacked.clear()

    # ---- reading ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows["epoch"])

    @property
    def num_groups(self) -> int:
        return self.num_classes * self.num_attrs

    @property
    def has_inferred(self) -> bool:
        """Whether any evaluation logged the method's own inferred validation groups."""
        return any(v is not None for v in self.rows["val_inferred"])

    def epoch_at(self, t: int) -> int:
        return int(self.rows["epoch"][t])

    def val_pred_at(self, t: int) -> np.ndarray:
        """(n_val,) int64 predicted classes at evaluation t."""
        return self.rows["val_pred"][t].astype(np.int64)

    def val_inferred_at(self, t: int) -> np.ndarray | None:
        """(n_val,) int64 inferred validation groups at evaluation t, or None."""
        return self.rows["val_inferred"][t]

    def test_counts_at(self, t: int) -> dict[str, Any]:
        """``metrics.report_from_counts``'s keyword arguments for the test split at evaluation t."""
        return {
            "group_hits": self.rows["test_group_hits"][t],
            "group_counts": self.test_group_counts,
            "class_hits": self.rows["test_class_hits"][t],
            "class_counts": self.test_class_counts,
            "hits": int(self.rows["test_hits"][t]),
            "n": self.test_n,
            "num_attrs": self.num_attrs,
        }

    def stacked(self, key: str) -> np.ndarray | None:
        """Rows of ``key`` (one of epoch, step, val_pred, val_inferred, test_*_hits) stacked to (T, ...), int16 for
        val_pred, else int64; None for val_inferred when no evaluation had inferred groups (rows without them are
        -1)."""
        if key not in self._stacked:
            rows = self.rows[key]
            if key == "val_inferred":
                if not self.has_inferred:
                    self._stacked[key] = None
                    return None
                empty = np.full((len(self.val_y),), -1, dtype=np.int64)
                rows = [empty if r is None else r for r in rows]
            widths = {"val_pred": (len(self.val_y),), "val_inferred": (len(self.val_y),)}
            widths |= {"test_group_hits": (self.num_groups,), "test_class_hits": (self.num_classes,)}
            dtype = np.int16 if key == "val_pred" else np.int64
            if rows:
                self._stacked[key] = np.stack([np.asarray(r) for r in rows]).astype(dtype, copy=False)
            else:
                self._stacked[key] = np.zeros((0, *widths.get(key, ())), dtype=dtype)
        return self._stacked[key]

    # ---- persistence -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Rows as plain tensors and ints (for a checkpoint read with ``torch.load(weights_only=True)``; a training
        run's, so torch is loaded already)."""
        import torch

        state: dict[str, Any] = {k: None if (v := self.stacked(k)) is None else torch.from_numpy(v) for k in _ROWS}
        state["shape"] = [len(self.val_y), self.test_n, self.num_classes, self.num_attrs]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the rows of ``state_dict`` (tensors or arrays) into a log started on the same data."""
        if list(state["shape"]) != [len(self.val_y), self.test_n, self.num_classes, self.num_attrs]:
            raise ValueError(f"evaluation log state has shape {state['shape']}, this log another")
        self._set_rows(state)

    def _set_rows(self, arrays: dict[str, Any]) -> None:
        T = len(arrays["epoch"])
        for key in _ROWS:
            value = arrays.get(key)
            if key == "val_inferred":
                rows = [None] * T if value is None else [None if bool((r < 0).all()) else r for r in _long(value)]
            elif key == "val_pred":
                rows = list(to_numpy(value).astype(np.int16))
            else:
                rows = list(_long(value))
            self.rows[key] = rows
        self._stacked.clear()

    def arrays(self) -> dict[str, np.ndarray]:
        """The file's arrays (see the module docstring)."""
        out = {k: v for k in _ROWS if (v := self.stacked(k)) is not None}
        out |= {
            "val_y": self.val_y,
            "val_a": self.val_a,
            "test_group_counts": self.test_group_counts,
            "test_class_counts": self.test_class_counts,
            "test_n": np.int64(self.test_n),
            "num_classes": np.int64(self.num_classes),
            "num_attrs": np.int64(self.num_attrs),
            "val_groups_complete": np.bool_(self.val_groups_complete),
            "version": np.int64(VERSION),
        }
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the log atomically (temp file + rename) as an ``.npz``."""
        arrays = self.arrays()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a bare name
                np.savez(f, **arrays)

        return atomic_writer(path, write, ".npz")

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalLog:
        """Reads a saved log; ``DataError`` (one line) for a missing key, wrong shape or unreadable file."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            reason = f"{type(e).__name__}: {e}".replace("\n", " ")
            raise DataError(f"{path}: not a readable evaluation log ({reason})") from None
        _check(arrays, str(path))
        log = cls(
            arrays["val_y"],
            arrays["val_a"],
            arrays["test_group_counts"],
            arrays["test_class_counts"],
            int(arrays["test_n"]),
            int(arrays["num_classes"]),
            int(arrays["num_attrs"]),
            bool(arrays["val_groups_complete"]),
        )
        log._set_rows(arrays)
        return log


def _check(arrays: dict[str, np.ndarray], source: str) -> None:
    """Keys, integer dtypes and mutually consistent shapes of a loaded log."""
    for key, ndim in _LAYOUT.items():
        if key not in arrays:
            raise DataError(f"{source}: evaluation log has no field '{key}'")
        v = arrays[key]
        kinds = "iub" if key == "val_groups_complete" else "iu"
        if v.dtype.kind not in kinds or v.ndim != ndim:
            raise DataError(f"{source}: field '{key}' must be a {ndim}-d integer array, got {v.ndim}-d {v.dtype}")
    if int(arrays.get("version", VERSION)) > VERSION:
        raise DataError(f"{source}: evaluation log version {int(arrays['version'])} is newer than this memaware's")
    T, n_val = len(arrays["epoch"]), len(arrays["val_y"])
    K, A = int(arrays["num_classes"]), int(arrays["num_attrs"])
    expected = {
        "step": (T,),
        "val_pred": (T, n_val),
        "val_a": (n_val,),
        "test_group_hits": (T, K * A),
        "test_group_counts": (K * A,),
        "test_class_hits": (T, K),
        "test_class_counts": (K,),
        "test_hits": (T,),
    }
    if "val_inferred" in arrays:
        expected["val_inferred"] = (T, n_val)
        if arrays["val_inferred"].dtype.kind not in "iu":
            raise DataError(f"{source}: field 'val_inferred' must be integer, got {arrays['val_inferred'].dtype}")
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise DataError(f"{source}: field '{key}' has shape {arrays[key].shape}, expected {shape}")
