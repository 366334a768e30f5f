"""Model selection after training (DomainBed's ``model_selection``, computed from the evaluation log).

A run logs every evaluation (``memaware.evallog.EvalLog``); a criterion is a small class whose ``score(log, t)``
rates evaluation t (higher is better, None = not computable for this log). ``select`` returns the evaluation a
criterion chooses (ties: the later one, as ``tracking.Selector``), ``reports`` the validation and test reports of
the evaluations the four validation criteria choose, in ``Selector.reports()``'s format. Because everything is read
from the log, a criterion registered today (``register_criterion``) applies to a sweep trained last month.
Scores are computed in numpy from the log's arrays (``memaware table`` never imports torch), with the float32
arithmetic torch used, so training and the table agree to the last bit; ``external_groups`` may be a tensor.

Built in: ``val_wga`` (true validation groups), ``val_gi_wga`` (XRM-inferred validation groups: the log's own, else
an XRM run's ``inferred_groups.npz``), ``val_worst_class``, ``val_avg``, ``last``, the oracle ``test_wga`` and
``val_bias_unsup`` (uLA's score: mean accuracy over the inferred groups).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .arrays import float32_mean, to_numpy
from .errors import ConfigError
from .evallog import EvalLog
from .metrics import ArrayLike, accuracy, group_report, report_from_counts, worst_class_acc, worst_group_acc

VAL_CRITERIA = ("val_wga", "val_gi_wga", "val_worst_class", "val_avg")
VAL_GROUP_USE = ("yes", "inferred", "no")
# older spellings (the paper's va_*, the table's first flags) -> registry name
ALIASES = {
    "va_wga": "val_wga",
    "va_gi_wga": "val_gi_wga",
    "worst_class": "val_worst_class",
    "va_worst_class": "val_worst_class",
    "avg": "val_avg",
    "va_avg": "val_avg",
    "va_avg_acc": "val_avg",
}


class Criterion:
    """A selection criterion. Subclasses set ``name``, ``description`` (one line), ``val_group_use`` ('yes': true
    validation groups, 'inferred': XRM-inferred ones, 'no': none) and implement ``score``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    val_group_use: ClassVar[str] = "no"
    oracle: ClassVar[bool] = False  # reads the test split: for diagnostics, never for reporting

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        """The score of evaluation t (higher is better), or None when it is not computable for this log.
        ``external_groups`` (n_val,): inferred validation groups from another run (an XRM run's)."""
        raise NotImplementedError

    def score_all(self, log: EvalLog, external_groups: ArrayLike | None = None) -> list[float | None]:
        """``score`` of every evaluation, (T,). Built-ins override it with one batched computation over T that gives
        the same floats (selecting is then a few array ops per run, not T Python calls per criterion)."""
        return [self.score(log, t, external_groups) for t in range(len(log))]


def _val_correct(log: EvalLog, t: int) -> np.ndarray:
    """(n_val,) bool: validation predictions of evaluation t that are right."""
    return log.val_pred_at(t) == log.val_y


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _val_correct_all(log: EvalLog) -> np.ndarray:
    """(T, n_val) float32: 1 where evaluation t's validation prediction is right."""
    return (log.stacked("val_pred").astype(np.int64) == log.val_y).astype(np.float32)


def _worst_all(correct: np.ndarray, groups: np.ndarray, num_groups: int) -> list[float | None]:
    """Per row t of ``correct`` (T, n), ``metrics.worst_group_acc`` over ``groups`` ((n,) or (T, n) ids in
    0..num_groups-1, < 0 ignored) with its float32 arithmetic: hit sums of 0/1 values are exact, so the floats are
    the same."""
    T, G = len(correct), num_groups
    groups = np.broadcast_to(groups, correct.shape)
    keep = groups >= 0
    ids = (np.where(keep, groups, 0) + G * np.arange(T)[:, None]).ravel()
    hits = np.bincount(ids, weights=(correct * keep).ravel().astype(np.float64), minlength=T * G)
    counts = np.bincount(ids, weights=keep.ravel().astype(np.float64), minlength=T * G)
    hits, counts = hits.reshape(T, G).astype(np.float32), counts.reshape(T, G).astype(np.float32)
    ratio = np.where(counts > 0, hits / np.maximum(counts, 1), np.float32(math.inf))
    return [_finite(v) for v in ratio.min(axis=1).tolist()]


def val_wga_computable(log: EvalLog) -> bool:
    """Every validation attribute is known and every training group has validation examples (``Selector``'s rule:
    a missing group would silently drop out of the minimum)."""
    return log.val_groups_complete and len(log.val_a) > 0 and bool((log.val_a >= 0).all())


class ValWGA(Criterion):
    name = "val_wga"
    description = "validation worst-group accuracy (true groups)"
    val_group_use = "yes"

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        if not val_wga_computable(log):
            return None
        group = log.val_y * log.num_attrs + log.val_a
        return _finite(worst_group_acc(_val_correct(log, t), group, log.num_groups))

    def score_all(self, log: EvalLog, external_groups: ArrayLike | None = None) -> list[float | None]:
        if not val_wga_computable(log) or not len(log):
            return [None] * len(log)
        return _worst_all(_val_correct_all(log), log.val_y * log.num_attrs + log.val_a, log.num_groups)


class ValGIWGA(Criterion):
    name = "val_gi_wga"
    description = "validation worst-group accuracy (XRM-inferred groups)"
    val_group_use = "inferred"

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        groups = inferred_groups(log, t, external_groups)
        if groups is None:
            return None
        return _finite(worst_group_acc(_val_correct(log, t), groups, int(groups.max()) + 1))

    def score_all(self, log: EvalLog, external_groups: ArrayLike | None = None) -> list[float | None]:
        rows = [inferred_groups(log, t, external_groups) for t in range(len(log))]
        have = [t for t, g in enumerate(rows) if g is not None]
        out: list[float | None] = [None] * len(log)
        if have:
            groups = np.stack([rows[t] for t in have])
            # a row's own number of groups is its max + 1: larger ids have no examples and change no minimum
            worst = _worst_all(_val_correct_all(log)[have], groups, int(groups.max()) + 1)
            for t, v in zip(have, worst, strict=True):
                out[t] = v
        return out


class ValBiasUnsup(Criterion):
    """uLA's bias-unsupervised validation score (Tsirigotis et al. 2023; the authors' ``u_balanced``): the mean
    accuracy over the inferred validation groups present, where uLA's groups are (label, bias-proxy prediction).
    ``val_gi_wga`` on the same groups is their ``u_worst``. Any method's inferred groups (or an XRM run's) work."""

    name = "val_bias_unsup"
    description = "validation accuracy averaged over inferred groups (uLA's bias-unsupervised score)"
    val_group_use = "inferred"

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        groups = inferred_groups(log, t, external_groups)
        if groups is None:
            return None
        return _finite(balanced_acc(_val_correct(log, t), groups))

    def score_all(self, log: EvalLog, external_groups: ArrayLike | None = None) -> list[float | None]:
        correct = _val_correct_all(log) if len(log) else None
        out: list[float | None] = []
        for t in range(len(log)):
            groups = inferred_groups(log, t, external_groups)
            out.append(None if groups is None else _finite(balanced_acc(correct[t], groups)))
        return out


def balanced_acc(correct: ArrayLike, groups: ArrayLike) -> float:
    """Mean over the groups present (ids >= 0) of the accuracy in each: correct (n,) bool or 0/1, groups (n,).
    float32 accuracies, averaged in torch's order (``arrays.float32_mean``): the floats torch gave before."""
    correct, groups = to_numpy(correct), to_numpy(groups)
    keep = groups >= 0
    if not bool(keep.any()):
        return math.nan
    g = groups[keep]
    counts = np.bincount(g)
    hits = np.bincount(g, weights=correct[keep].astype(np.float64), minlength=len(counts))
    present = counts > 0
    return float32_mean(hits[present].astype(np.float32) / counts[present].astype(np.float32))


class ValWorstClass(Criterion):
    name = "val_worst_class"
    description = "validation worst-class accuracy (no group labels)"

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        return _finite(worst_class_acc(_val_correct(log, t), log.val_y, log.num_classes))

    def score_all(self, log: EvalLog, external_groups: ArrayLike | None = None) -> list[float | None]:
        return _worst_all(_val_correct_all(log), log.val_y, log.num_classes) if len(log) else []


class ValAvg(Criterion):
    name = "val_avg"
    description = "validation average accuracy (no group labels)"

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        return _finite(accuracy(_val_correct(log, t))) if len(log.val_y) else None

    def score_all(self, log: EvalLog, external_groups: ArrayLike | None = None) -> list[float | None]:
        if not len(log.val_y) or not len(log):
            return [None] * len(log)
        right = np.count_nonzero(_val_correct_all(log), axis=1).astype(np.float32)
        return [_finite(v) for v in (right / np.float32(len(log.val_y))).tolist()]  # as a float32 mean


class Last(Criterion):
    name = "last"
    description = "the last evaluation (runs compared by its validation average accuracy)"

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        # only the last evaluation has a score; its value ranks hyper-parameter combinations against each other
        return ValAvg().score(log, t) if t == len(log) - 1 else None


class OracleTestWGA(Criterion):
    name = "test_wga"
    description = "ORACLE test worst-group accuracy (reads the test groups: diagnostics only)"
    val_group_use = "yes"
    oracle = True

    def score(self, log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> float | None:
        return _finite(report_from_counts(**log.test_counts_at(t))["worst_group_acc"])


_REGISTRY: dict[str, Criterion] = {}


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Adds a criterion class to the registry (usable as a decorator); a name already taken by another class is
    a ``ConfigError``."""
    if not (isinstance(cls, type) and issubclass(cls, Criterion)) or not cls.name:
        raise ConfigError(f"a selection criterion must subclass memaware.selection.Criterion and set 'name': {cls!r}")
    if cls.val_group_use not in VAL_GROUP_USE:
        raise ConfigError(f"criterion '{cls.name}': val_group_use must be one of {VAL_GROUP_USE}")
    name = cls.name.strip().lower()
    held = _REGISTRY.get(name)
    if name in ALIASES or (held is not None and type(held) is not cls):
        raise ConfigError(f"selection criterion '{name}' is already registered")
    _REGISTRY[name] = cls()
    return cls


def unregister_criterion(name: str) -> None:
    """Removes a criterion (tests, plug-ins being reloaded); built-ins can be removed too."""
    _REGISTRY.pop(name, None)


for _cls in (ValWGA, ValGIWGA, ValWorstClass, ValAvg, Last, OracleTestWGA, ValBiasUnsup):
    register_criterion(_cls)


def criterion_names(aliases: bool = False) -> list[str]:
    """Registered names (in registration order), then the accepted old spellings when ``aliases``."""
    return list(_REGISTRY) + (list(ALIASES) if aliases else [])


def get_criterion(name: str) -> Criterion:
    """A registered name, an alias ('va_wga', 'avg', ...), or 'package.module:Class' (imported and registered);
    ``ConfigError`` otherwise."""
    key = name.strip()
    if ":" in key:
        module, _, attr = key.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"selection criterion '{name}': cannot import it ({e})") from None
        register_criterion(cls)
        return _REGISTRY[cls.name.strip().lower()]
    key = ALIASES.get(key.lower(), key.lower())
    if key not in _REGISTRY:
        raise ConfigError(
            f"unknown selection criterion '{name}', choose from {', '.join(criterion_names(aliases=True))} "
            "or give package.module:Class"
        )
    return _REGISTRY[key]


def _as_criterion(criterion: str | Criterion) -> Criterion:
    return criterion if isinstance(criterion, Criterion) else get_criterion(criterion)


def inferred_groups(log: EvalLog, t: int, external_groups: ArrayLike | None = None) -> np.ndarray | None:
    """(n_val,) inferred validation groups at evaluation t: the method's own, else ``external_groups``, else None."""
    own = log.val_inferred_at(t)
    if own is not None:
        return own
    if external_groups is None:
        return None
    groups = to_numpy(external_groups, np.int64)
    if groups.shape != log.val_y.shape:
        raise ConfigError(
            f"inferred validation groups have {len(groups)} entries, the validation split {len(log.val_y)}"
        )
    return groups


def improves(score: float | None, best: float | None) -> bool:
    """Whether a score replaces the best so far: a later evaluation wins ties (``>=``); None and nan never win."""
    if score is None or math.isnan(score):
        return False
    return best is None or score >= best


def scores(log: EvalLog, criterion: str | Criterion, external_groups: ArrayLike | None = None) -> list[float | None]:
    """The criterion's score of every evaluation, (T,)."""
    return _as_criterion(criterion).score_all(log, external_groups)


def select(log: EvalLog, criterion: str | Criterion, external_groups: ArrayLike | None = None) -> int | None:
    """Index of the evaluation the criterion chooses (ties: the later), or None when it is not computable."""
    best_t, best = None, None
    for t, s in enumerate(scores(log, criterion, external_groups)):
        if improves(s, best):
            best_t, best = t, s
    return best_t


GI_WGA_HINT = (
    "pass --inferred-groups DIR/inferred_groups.npz from an XRM or MAT run on the same data "
    "(memaware train --method xrm --out DIR), or choose val_wga, val_worst_class or val_avg"
)


def resolve(criterion: str, log: EvalLog, external_groups: ArrayLike | None = None) -> str:
    """The criterion a run follows: 'auto' is val_wga when computable, else val_gi_wga when inferred groups exist
    (the log's or external), else val_avg (the run's results say which). An explicit criterion is followed or
    refused, never replaced: val_gi_wga without inferred groups and val_wga that is not computable are a
    ``ConfigError`` naming what would make them computable. Inferred groups are known once the first evaluation is
    logged (``engine.evaluation.check_criterion`` refuses both before training where it can)."""
    has_inferred = log.has_inferred or external_groups is not None
    if criterion == "auto":
        if val_wga_computable(log):
            return "val_wga"
        return "val_gi_wga" if has_inferred else "val_avg"
    name = _as_criterion(criterion).name
    if name == "val_gi_wga" and not has_inferred:
        raise ConfigError(
            f"selection 'val_gi_wga' needs inferred validation groups and this run has none; {GI_WGA_HINT}"
        )
    if name == "val_wga" and not val_wga_computable(log):
        raise ConfigError(
            "selection 'val_wga' needs every validation attribute known and validation examples of every training "
            "group; use --selection val_gi_wga or val_worst_class"
        )
    return name


def not_computable(name: str) -> ConfigError:
    """The error for a followed criterion whose score is None at an evaluation (a run never claims a criterion it
    could not use)."""
    hint = GI_WGA_HINT if name == "val_gi_wga" else "choose another --selection (memaware table applies any later)"
    return ConfigError(f"selection '{name}' cannot be computed for this run; {hint}")


def report_at(log: EvalLog, t: int) -> dict[str, Any]:
    """{"epoch", "val", "test"} of evaluation t: ``group_report`` of its validation predictions, the test report
    from its counts."""
    K, A = log.num_classes, log.num_attrs
    return {
        "epoch": log.epoch_at(t),
        "val": group_report(log.val_pred_at(t), log.val_y, log.val_a, K, A),
        "test": report_from_counts(**log.test_counts_at(t)),
    }


def chosen(log: EvalLog, criterion: str | Criterion, external_groups: ArrayLike | None = None) -> dict[str, Any] | None:
    """{"epoch", "val_score", "val", "test"} of the evaluation the criterion chooses, or None."""
    all_scores = scores(log, criterion, external_groups)
    best_t, best = None, None
    for t, value in enumerate(all_scores):
        if improves(value, best):
            best_t, best = t, value
    if best_t is None:
        return None
    rep = report_at(log, best_t)
    return {"epoch": rep["epoch"], "val_score": best, **rep}


def reports(
    log: EvalLog, external_groups: ArrayLike | None = None, criteria: Sequence[str] = VAL_CRITERIA
) -> dict[str, dict[str, Any]]:
    """{criterion: {"epoch", "val_score", "val", "test"}} for the ``criteria`` computable on this log, as
    ``tracking.Selector.reports()`` (results.json's ``criteria``)."""
    out = {}
    for name in criteria:
        rep = chosen(log, name, external_groups)
        if rep is not None:
            out[_as_criterion(name).name] = rep
    return out
