"""Every selection criterion for every member of a program, and their reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..data.groups import TEST, VAL, GroupData, group_name

if TYPE_CHECKING:  # annotations only (api imports this module)
    from .api import _Run
    from .program import _Program


def _worst(correct: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(C, n) float correctness, (n,) or (C, n) ids in 0..G-1 (< 0 ignored) -> (C,) minimum over the groups present
    of hits / counts, in float32 as ``metrics.group_correct`` (nan where no group is present)."""
    C = correct.shape[0]
    if group.dim() == 1:
        keep = group >= 0
        g, kept = (group, correct) if bool(keep.all()) else (group[keep], correct[:, keep])
        hits = torch.zeros(C, num_groups, device=correct.device).index_add_(1, g, kept)
        counts = torch.bincount(g, minlength=num_groups).float().expand(C, num_groups)
    else:
        hits = torch.zeros(C, num_groups, device=correct.device).scatter_add_(1, group, correct)
        counts = torch.zeros(C, num_groups, device=correct.device).scatter_add_(1, group, torch.ones_like(correct))
    ratio = torch.where(counts > 0, hits / counts, torch.full_like(hits, float("inf")))
    worst = ratio.min(dim=1).values
    return torch.where(torch.isinf(worst), torch.full_like(worst, float("nan")), worst)


class _Reports:
    """``metrics.group_report`` of C prediction vectors (C, n) against one split, built lazily per member with the
    same float32 arithmetic (the same numbers as calling group_report member by member)."""

    def __init__(self, pred: torch.Tensor, y: torch.Tensor, a: torch.Tensor, num_classes: int, num_attrs: int):
        correct = (pred == y).float()
        G = num_classes * num_attrs
        g = torch.where(a >= 0, y * num_attrs + a, torch.full_like(y, -1))
        keep = g >= 0
        g_kept, kept = (g, correct) if bool(keep.all()) else (g[keep], correct[:, keep])
        hits = torch.zeros(correct.shape[0], G, device=correct.device).index_add_(1, g_kept, kept)
        counts = torch.bincount(g_kept, minlength=G).float()
        self.counts = counts.tolist()
        self.acc = (hits / counts).tolist()  # (C, G), float32 division as float(hits[i] / counts[i])
        self.avg = correct.mean(dim=1).tolist() if len(y) else [float("nan")] * correct.shape[0]
        self.worst_group = _worst(correct, g, G).tolist()
        self.worst_class = _worst(correct, y, num_classes).tolist()
        self.num_attrs = num_attrs

    def __getitem__(self, c: int) -> dict[str, Any]:
        groups = {
            group_name(i, self.num_attrs): {"n": int(n), "acc": self.acc[c][i]}
            for i, n in enumerate(self.counts)
            if n > 0
        }
        return {
            "avg_acc": self.avg[c],
            "worst_group_acc": self.worst_group[c],
            "worst_class_acc": self.worst_class[c],
            "groups": groups,
        }


def _argmax(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t.argmax(dim)`` (the first maximum on ties) for a short class axis that is not the innermost one, by K - 1
    comparisons: torch's argmax over such an axis is two orders of magnitude slower on CPU."""
    parts = t.unbind(dim)
    best, index = parts[0], torch.zeros(parts[0].shape, dtype=torch.long, device=t.device)
    for k, part in enumerate(parts[1:], start=1):
        better = part > best
        best = torch.where(better, part, best)
        index.masked_fill_(better, k)
    return index


def _predict(method: str, logits: torch.Tensor) -> torch.Tensor:
    """(C, H, K, n) -> (C, n) predicted classes: XRM averages its twins, the others use their (last) head."""
    # argmax of the heads' sum = of their mean (division by H = 2 is exact)
    out = logits.sum(dim=1) if method == "xrm" else logits[:, -1]
    return _argmax(out, dim=1)


class _Selection:
    """``tracking.Selector`` for C members: every criterion's best epoch (later wins ties) with its reports."""

    def __init__(self, data: GroupData, runs: list[_Run], method: str, keep_state: bool):
        self.data, self.method, self.keep_state = data, method, keep_state
        self.criteria = [r.selector.criterion for r in runs]
        # validation groups for val_wga (None when a training group has no validation example): data-level
        self.group = next((r.selector.group for r in runs if r.selector.criterion != "last"), None)
        self.external = [r.external if r.selector.criterion != "last" else None for r in runs]
        val, test = data.indices(VAL), data.indices(TEST)
        self.val = (data.x[val], data.y[val], data.a[val])
        self.test = (data.x[test], data.y[test], data.a[test])
        C = len(runs)
        self.best: list[dict[str, dict[str, Any]]] = [{} for _ in range(C)]
        self.best_epoch: list[int | None] = [None] * C
        self.inferred: list[torch.Tensor | None] = [None] * C
        self.best_state: list[dict[str, torch.Tensor] | None] = [None] * C

    def inferred_groups(self, val_logits: torch.Tensor, phase1: list[torch.Tensor | None] | None) -> list:
        """Per member: the method's own inferred validation groups (XRM: cross-mistakes now; MAT: phase 1's),
        else the external ones (an XRM run's), else None."""
        if self.method == "xrm":
            y = self.val[1].to(val_logits.device)
            wrong = (_argmax(val_logits, dim=2) != y.view(1, 1, -1)).any(dim=1)  # xrm.cross_mistake_groups
            return list((y * 2 + wrong.long()).cpu().unbind(0))
        if phase1 is not None:
            return list(phase1)
        return list(self.external)

    def update(
        self,
        epoch: int,
        program: _Program,
        phase1: list[torch.Tensor | None] | None = None,
    ) -> None:
        active = [c for c, crit in enumerate(self.criteria) if crit != "last"]
        if not active:
            return
        x_val, y_val, a_val = self.val
        val_logits = program.logits(x_val)
        pred = _predict(self.method, val_logits).cpu()
        inferred = self.inferred_groups(val_logits, phase1)
        correct = (pred == y_val).float()
        k, a = self.data.num_classes, self.data.num_attrs
        scores: dict[str, list[float]] = {}
        if self.group is not None:
            scores["val_wga"] = _worst(correct, self.group, self.data.num_groups).tolist()
        have = [c for c in range(len(pred)) if inferred[c] is not None]
        if have:
            groups = torch.stack([inferred[c] for c in have])
            gi = _worst(correct[have], groups, int(groups.max()) + 1).tolist()
            # a member's own number of groups is int(max) + 1: larger ids have no examples, which changes nothing
            scores["val_gi_wga"] = [float("nan")] * len(pred)
            for i, c in enumerate(have):
                scores["val_gi_wga"][c] = gi[i]
        scores["val_worst_class"] = _worst(correct, y_val, k).tolist()
        scores["val_avg"] = correct.mean(dim=1).tolist()
        reports: dict[str, Any] = {}
        for c in active:
            if self.criteria[c] == "val_gi_wga" and inferred[c] is None:
                self.criteria[c] = "val_avg"  # no validation attributes and no inferred groups anywhere
            mine = {crit: v[c] for crit, v in scores.items() if crit != "val_gi_wga" or inferred[c] is not None}
            best = self.best[c]
            improved = [crit for crit, v in mine.items() if v >= best.get(crit, {}).get("val_score", -float("inf"))]
            if not improved:
                continue
            if not reports:
                reports["val"] = _Reports(pred, y_val, a_val, k, a)
                x_test, y_test, a_test = self.test
                reports["test"] = _Reports(_predict(self.method, program.logits(x_test)).cpu(), y_test, a_test, k, a)
            val_report, test_report = reports["val"][c], reports["test"][c]
            for crit in improved:
                best[crit] = {"epoch": epoch, "val_score": mine[crit], "val": val_report, "test": test_report}
            if self.criteria[c] in improved:
                self.best_epoch[c], self.inferred[c] = epoch, inferred[c]
                if self.keep_state:
                    self.best_state[c] = program.member_state(c)


# ---- the runs of one call ----------------------------------------------------------------------------------
