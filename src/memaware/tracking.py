"""What the training loop records: per-group accuracy curves (``History``) and the validation checkpoint
(``Selector``). Kept apart from the loop so that both stay short and testable."""

from __future__ import annotations

import copy
from typing import Any

import torch

from .data.groups import TEST, TRAIN, VAL, GroupData, group_name
from .errors import ConfigError
from .methods import Method
from .metrics import group_correct, group_report
from .models import all_logits

SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}


class History:
    """Per-group hit counts per evaluation point, kept on device and turned into curves once, at the end.

    Training accuracy comes from the training pass itself (logits before each step: no extra forward pass).
    A linear model's curves on other splits are computed after training from weight snapshots, in one GEMM.
    """

    def __init__(self, data: GroupData, splits: tuple[str, ...], model: torch.nn.Module, device: str):
        self.data, self.splits, self.device = data, splits, device
        self.num_groups = data.num_groups
        self.epochs: list[int] = []
        self.rec: dict[str, list[torch.Tensor]] = {"train": [], "seen": [], "loss": [], **{s: [] for s in splits}}
        self.linear = bool(splits) and not list(model.backbone.parameters())
        self.snapshots: list = []
        self.dual = None
        self.eval = {}
        for s in splits:
            idx = data.indices(SPLITS[s])
            self.eval[s] = (data.x[idx], data.y[idx], data.group[idx])

    def record(self, epoch: int, train_hits, train_seen, loss, model, method: Method, bs: int, dual=None):
        """``train_hits`` / ``train_seen`` (G,): correct and drawn training examples per group this epoch."""
        self.epochs.append(epoch)
        self.rec["train"].append(train_hits)
        self.rec["seen"].append(train_seen)
        self.rec["loss"].append(loss)
        if self.linear:
            self.dual = dual  # with the dual form, snapshots are (s, C) states (memaware.dual)
            params = [p.detach().clone() for p in model.heads.parameters()] if dual is None else dual.state()
            self.snapshots.append(params)
            return
        for s, (x, y, g) in self.eval.items():
            pred = method.predict_logits(all_logits(model, x, bs, self.device)).argmax(dim=1).cpu()
            self.rec[s].append(group_correct(pred == y, g, self.num_groups)[0])

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs": list(self.epochs),
            "rec": {k: list(v) for k, v in self.rec.items()},
            "snapshots": list(self.snapshots),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs, self.rec, self.snapshots = state["epochs"], state["rec"], state["snapshots"]

    @torch.no_grad()
    def _snapshot_hits(self, split: str, method: Method, model) -> list[torch.Tensor]:
        """Per-group hits (G,) for each snapshot of the linear heads, T snapshots per GEMM."""
        x, y, group = (t.to(self.device) for t in self.eval[split])
        H, K = model.heads.num_heads, model.heads.num_classes
        chunk = max(1, (1 << 24) // max(1, len(x) * H * K))  # bound the (n, T, H*K) logits to ~64 MB
        valid, g = (group >= 0).float(), group.clamp_min(0)
        hits = []
        for start in range(0, len(self.snapshots), chunk):
            block = self.snapshots[start : start + chunk]
            t = len(block)
            if self.dual is not None:
                logits = self.dual.snapshot_logits(x, block).reshape(t * len(x), H, K)
            else:
                logits = x @ torch.cat([s[0] for s in block]).t()  # (n, T*H*K)
                if len(block[0]) > 1:  # bias
                    logits += torch.cat([s[1] for s in block])
                logits = logits.view(len(x), t, H, K).transpose(0, 1).reshape(t * len(x), H, K)
            correct = (method.predict_logits(logits).argmax(dim=1).view(t, len(x)) == y).float() * valid
            hits.extend(torch.zeros(t, self.num_groups, device=x.device).index_add_(1, g, correct).unbind(0))
        return hits

    def curves(self, method: Method, model) -> dict[str, Any]:
        """{"epoch", "loss", split: {"majority", "minority", "groups": {name: [...]}}}."""
        if self.linear:
            for s in self.splits:
                self.rec[s] = self._snapshot_hits(s, method, model)
        data, G, A = self.data, self.data.num_groups, self.data.num_attrs
        out: dict[str, Any] = {"epoch": self.epochs, "loss": torch.stack(self.rec["loss"]).cpu().tolist()}
        gy, ga = torch.arange(G) // A, torch.arange(G) % A
        for s in ("train", *self.splits):
            hits = torch.stack(self.rec[s]).cpu()  # (T, G)
            if s == "train":  # what the loop drew (sampling weights and subsets change it), (T, G)
                counts = torch.stack(self.rec["seen"]).cpu()
            else:
                group = data.group[data.indices(SPLITS[s])]
                counts = torch.bincount(group[group >= 0], minlength=G).float().expand_as(hits)
            present = counts.sum(0) > 0
            curves: dict[str, Any] = {}
            if data.num_attrs == data.num_classes:  # majority (a == y) needs comparable values
                for name, mask in (("majority", gy == ga), ("minority", gy != ga)):
                    n = counts[:, mask].sum(1)
                    curves[name] = (hits[:, mask].sum(1) / n).tolist() if (n > 0).all() else []
            curves["groups"] = {group_name(i, A): (hits[:, i] / counts[:, i]).tolist() for i in range(G) if present[i]}
            out[s] = curves
        return out


CRITERIA = ("val_wga", "val_gi_wga", "val_worst_class", "val_avg")


class Selector:
    """Checkpoint selection on validation, for every criterion at once (later wins ties).

    ``criterion`` picks the state the run ends with; the other criteria are tracked beside it, each keeping the
    validation and test report of its own best evaluation, so one run answers "what would va_wga / va_gi_wga /
    worst-class / average selection have given" (paper Table 1 reports two of them). ``val_gi_wga`` uses the
    method's own inferred groups (XRM, MAT) or ``external_groups`` (an XRM run's, for the other methods).
    """

    def __init__(self, criterion: str, data: GroupData, external_groups: torch.Tensor | None = None):
        if criterion == "auto":
            criterion = "val_wga" if data.has_attrs(VAL) else "val_gi_wga"
        if criterion == "val_wga" and not data.has_attrs(VAL):
            raise ConfigError("selection 'val_wga' needs validation attributes (field 'a' >= 0 on split 1)")
        self.criterion, self.data = criterion, data
        self.best: dict[str, dict[str, Any]] = {}
        self.best_score, self.best_epoch = -float("inf"), None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.inferred: torch.Tensor | None = None
        idx = data.indices(VAL)
        self.x, self.y, self.a = data.x[idx], data.y[idx], data.a[idx]
        if criterion == "last":  # nothing to track (regression, nested phases)
            return
        if external_groups is not None and len(external_groups) != len(idx):
            raise ConfigError(
                f"inferred validation groups have {len(external_groups)} entries, the validation split {len(idx)}"
            )
        self.external = external_groups
        self.group = data.group[idx] if data.has_attrs(VAL) else None
        if self.group is not None:
            # a training group without validation examples would be ignored by the minimum: say so instead
            in_train = torch.bincount(data.group[data.indices(TRAIN)].clamp_min(0), minlength=data.num_groups) > 0
            missing = [g for g in range(data.num_groups) if in_train[g] and not (self.group == g).any()]
            if missing and criterion == "val_wga":
                names = ", ".join(group_name(g, data.num_attrs) for g in missing)
                raise ConfigError(
                    f"selection 'val_wga': group(s) {names} have training but no validation examples; "
                    "use --selection val_gi_wga or val_worst_class"
                )
            if missing:
                self.group = None  # val_wga is not computable; the other criteria still are
        test_idx = data.indices(TEST)
        self.test = (data.x[test_idx], data.y[test_idx], data.a[test_idx])

    def _scores(self, correct: torch.Tensor, inferred: torch.Tensor | None) -> dict[str, float]:
        def worst(group: torch.Tensor, n: int) -> float:
            hits, counts = group_correct(correct, group, n)
            return float((hits[counts > 0] / counts[counts > 0]).min())

        k = self.data.num_classes
        scores = {}
        if self.group is not None:
            scores["val_wga"] = worst(self.group, self.data.num_groups)
        if inferred is not None:
            scores["val_gi_wga"] = worst(inferred, int(inferred.max()) + 1)
        scores["val_worst_class"] = worst(self.y, k)
        scores["val_avg"] = float(correct.float().mean())
        return scores

    def update(self, epoch: int, model, method: Method, batch_size: int, device: str) -> None:
        if self.criterion == "last":
            return
        logits = all_logits(model, self.x, batch_size, device).cpu()
        pred = method.predict_logits(logits).argmax(dim=1)
        inferred = method.infer_groups(logits, self.y, "val")
        if inferred is None:
            inferred = self.external
        if self.criterion == "val_gi_wga" and inferred is None:
            self.criterion = "val_avg"  # no validation attributes and no inferred groups anywhere
        scores = self._scores(pred == self.y, inferred)
        improved = [c for c, v in scores.items() if v >= self.best.get(c, {}).get("val_score", -float("inf"))]
        if not improved:
            return
        k, a = self.data.num_classes, self.data.num_attrs
        val_report = group_report(pred, self.y, self.a, k, a)
        x_test, y_test, a_test = self.test
        test_pred = method.predict_logits(all_logits(model, x_test, batch_size, device).cpu()).argmax(dim=1)
        test_report = group_report(test_pred, y_test, a_test, k, a)
        for c in improved:
            self.best[c] = {"epoch": epoch, "val_score": scores[c], "val": val_report, "test": test_report}
        if self.criterion in improved:
            self.best_score, self.best_epoch, self.inferred = scores[self.criterion], epoch, inferred
            self.best_state = copy.deepcopy(model.state_dict())

    def reports(self) -> dict[str, dict[str, Any]]:
        """{criterion: {"epoch", "val_score", "val", "test"}} for the criteria that could be computed."""
        return {c: self.best[c] for c in CRITERIA if c in self.best}

    def state_dict(self) -> dict[str, Any]:
        keys = ("criterion", "best", "best_score", "best_epoch", "best_state", "inferred")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
