"""Evaluation during one run: validation and test predictions logged as one ``EvalLog`` row per evaluation, and the
weights of the best evaluation under the run's criterion kept for the end (scored by ``memaware.selection``, the
same code that selects after the fact, so training and ``memaware table`` can never disagree)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..data.groups import TEST, TRAIN, VAL, GroupData, group_name
from ..errors import ConfigError
from ..evallog import EvalLog
from ..methods import Method
from ..models import all_logits
from ..selection import GI_WGA_HINT, get_criterion, improves, not_computable, reports, resolve, val_wga_computable


def log_labels(data: GroupData) -> tuple:
    """``EvalLog.start``'s arguments for runs on ``data``: the labels of its validation and test splits, K, A and the
    groups present in training."""
    val, test = data.indices(VAL), data.indices(TEST)
    train_groups = data.group[data.indices(TRAIN)]
    return (
        data.y[val], data.a[val], data.y[test], data.a[test], data.num_classes, data.num_attrs,
        train_groups[train_groups >= 0].unique(),
    )  # fmt: skip


def start_log(data: GroupData) -> EvalLog:
    """An empty evaluation log for a run on ``data``."""
    return EvalLog.start(*log_labels(data))


def check_criterion(
    criterion: str, data: GroupData, log: EvalLog, method: Method | None = None, has_external: bool = False
) -> None:
    """Refuses, before any training, a criterion that cannot be computed on ``data``: one line saying why and what
    would make it computable. ``method`` (when known): val_gi_wga needs one that infers groups, or
    ``has_external`` (an XRM run's inferred groups)."""
    if criterion not in ("auto", "last"):
        criterion = get_criterion(criterion).name  # an unknown name is a one-line ConfigError; aliases resolved
    if criterion == "val_gi_wga" and method is not None and not method.infers_groups and not has_external:
        raise ConfigError(
            f"selection 'val_gi_wga' needs inferred validation groups and method '{method.name}' infers none; "
            + GI_WGA_HINT
        )
    if criterion != "val_wga":
        return
    if not data.has_attrs(VAL):
        raise ConfigError("selection 'val_wga' needs validation attributes (field 'a' >= 0 on split 1)")
    if not val_wga_computable(log):
        train_g = data.group[data.indices(TRAIN)]
        val_g = data.group[data.indices(VAL)]
        missing = sorted(set(train_g[train_g >= 0].tolist()) - set(val_g[val_g >= 0].tolist()))
        names = ", ".join(group_name(g, data.num_attrs) for g in missing)
        raise ConfigError(
            f"selection 'val_wga': group(s) {names} have training but no validation examples; "
            "use --selection val_gi_wga or val_worst_class"
        )


class OnlineSelection:
    """Logs every evaluation of one run and keeps the best weights under ``criterion`` ('auto' resolves at the
    first evaluation, when it is known whether the method infers groups). ``external_groups`` (n_val,): an XRM
    run's inferred validation groups for ``val_gi_wga`` when the method infers none. With ``criterion='last'``
    nothing is evaluated (phases, regression)."""

    def __init__(
        self,
        criterion: str,
        data: GroupData,
        external_groups: torch.Tensor | None = None,
        method: Method | None = None,
    ):
        self.requested, self.external = criterion, external_groups
        self.criterion: str | None = "last" if criterion == "last" else None
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.inferred: torch.Tensor | None = None
        self.log: EvalLog | None = None
        if criterion == "last":
            return
        self.log = start_log(data)
        check_criterion(criterion, data, self.log, method, external_groups is not None)
        val, test = data.indices(VAL), data.indices(TEST)
        if external_groups is not None and len(external_groups) != len(val):
            raise ConfigError(
                f"inferred validation groups have {len(external_groups)} entries, the validation split {len(val)}"
            )
        self.x_val, self.y_val, self.x_test = data.x[val], data.y[val], data.x[test]

    @property
    def active(self) -> bool:
        return self.log is not None

    @torch.no_grad()
    def update(self, epoch: int, step: int, model: torch.nn.Module, method: Method, batch_size: int, device: str):
        """Evaluates ``model`` on validation and test, logs the row, keeps the weights if the criterion improves."""
        if self.log is None:
            return
        val_logits = all_logits(model, self.x_val, batch_size, device).cpu()
        val_pred = method.predict_logits(val_logits).argmax(dim=1)
        inferred = method.infer_groups(val_logits, self.y_val, "val")
        test_pred = method.predict_logits(all_logits(model, self.x_test, batch_size, device).cpu()).argmax(dim=1)
        self.log.append(epoch, step, val_pred, test_pred, inferred if method.infers_groups else None)
        if self.criterion is None:
            self.criterion = resolve(self.requested, self.log, self.external)
        score = get_criterion(self.criterion).score(self.log, len(self.log) - 1, self.external)
        if score is None and self.requested != "auto":
            raise not_computable(self.criterion)
        if improves(score, self.best_score):
            self.best_score, self.best_epoch = score, epoch
            self.inferred = inferred if inferred is not None else self.external
            self.best_state = copy.deepcopy(model.state_dict())

    def reports(self) -> dict[str, dict[str, Any]]:
        """{criterion: {"epoch", "val_score", "val", "test"}} for every validation criterion computable."""
        return {} if self.log is None or not len(self.log) else reports(self.log, self.external)

    def state_dict(self) -> dict[str, Any]:
        keys = ("criterion", "best_score", "best_epoch", "best_state", "inferred")
        state: dict[str, Any] = {k: getattr(self, k) for k in keys}
        state["log"] = None if self.log is None else self.log.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("criterion", "best_score", "best_epoch", "best_state", "inferred"):
            setattr(self, k, state[k])
        if self.log is not None:
            self.log.load_state_dict(state["log"])
