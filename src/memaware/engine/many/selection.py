"""Online checkpoint selection for many members: ``engine.evaluation.OnlineSelection``'s rules, member by member,
on evaluation logs appended for all members at once (``EvalLog.append_many``). Every score and report comes from
``memaware.selection``, the code that selects after the fact, so a batched run and ``memaware table`` agree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ... import selection
from ...data.groups import VAL, GroupData
from ...errors import ConfigError
from ...evallog import EvalLog
from ..evaluation import check_criterion, log_labels


class ManySelection:
    """Logs and online selection of C members on ``data``. ``criteria[c]``: member c's requested criterion ('auto'
    resolves at its first evaluation; 'last': never evaluated); ``externals[c]`` (n_val,) an XRM run's inferred
    validation groups for ``val_gi_wga`` when the member's method infers none, or None."""

    def __init__(
        self,
        data: GroupData,
        criteria: Sequence[str],
        externals: Sequence[torch.Tensor | None],
        methods: Sequence[Any] | None = None,
    ):
        C = len(criteria)
        self.requested, self.external = list(criteria), list(externals)
        self.criterion: list[str | None] = ["last" if c == "last" else None for c in criteria]
        self.best_score: list[float | None] = [None] * C
        self.best_epoch: list[int | None] = [None] * C
        self.best_state: list[dict[str, torch.Tensor] | None] = [None] * C
        self.inferred: list[torch.Tensor | None] = [None] * C
        self.logs: list[EvalLog | None] = [None] * C
        active = [c for c in range(C) if criteria[c] != "last"]
        if not active:
            return
        val = data.indices(VAL)
        logs = EvalLog.start_many(len(active), *log_labels(data))
        for c, log in zip(active, logs, strict=True):
            self.logs[c] = log
        checked = set()
        for c in active:  # before any training, as fit does (methods: what can infer groups)
            method = methods[c] if methods is not None else None
            key = (criteria[c], type(method), self.external[c] is not None)
            if key not in checked:
                checked.add(key)
                check_criterion(criteria[c], data, logs[0], method, self.external[c] is not None)
        for c in active:
            ext = self.external[c]
            if ext is not None and len(ext) != len(val):
                raise ConfigError(
                    f"inferred validation groups have {len(ext)} entries, the validation split {len(val)}"
                )

    def evaluated(self, c: int) -> bool:
        """Whether member c is evaluated (its criterion is not 'last')."""
        return self.logs[c] is not None

    def update(
        self,
        epoch: int,
        step: int,
        members: Sequence[int],
        val_pred: torch.Tensor,
        test_pred: torch.Tensor,
        logged: Sequence[torch.Tensor | None],
        inferred: Sequence[torch.Tensor | None],
        state_of: Callable[[int], dict[str, torch.Tensor]],
    ) -> None:
        """One evaluation of ``members`` (D of them): predictions ``val_pred`` (D, n_val) and ``test_pred``
        (D, n_test), ``logged`` the inferred validation groups the log keeps (methods that infer groups) and
        ``inferred`` what ``infer_groups`` returned; ``state_of(c)`` copies member c's weights when it improves."""
        logs = [self.logs[c] for c in members]
        EvalLog.append_many(logs, epoch, step, val_pred, test_pred, list(logged))
        for i, c in enumerate(members):
            log = self.logs[c]
            if self.criterion[c] is None:
                self.criterion[c] = selection.resolve(self.requested[c], log, self.external[c])
            score = selection.get_criterion(self.criterion[c]).score(log, len(log) - 1, self.external[c])
            if score is None and self.requested[c] != "auto":
                raise selection.not_computable(self.criterion[c])
            if selection.improves(score, self.best_score[c]):
                self.best_score[c], self.best_epoch[c] = score, epoch
                self.inferred[c] = inferred[i] if inferred[i] is not None else self.external[c]
                self.best_state[c] = state_of(c)

    def reports(self, c: int) -> dict[str, dict[str, Any]]:
        """{criterion: {"epoch", "val_score", "val", "test"}} of member c for every validation criterion."""
        log = self.logs[c]
        return {} if log is None or not len(log) else selection.reports(log, self.external[c])
