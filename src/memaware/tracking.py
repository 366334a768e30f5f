"""What the training loop records: per-group accuracy curves (``History``) and the validation checkpoint
(``Selector``). Kept apart from the loop so that both stay short and testable."""

from __future__ import annotations

import copy
from typing import Any

import torch

from .data.groups import TEST, TRAIN, VAL, GroupData, group_name
from .errors import ConfigError
from .methods import Method
from .metrics import group_correct

SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}


def all_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """Raw model outputs for ``x`` in eval mode, batched, sequential (aligned with x's rows)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


class History:
    """Per-group hit counts per evaluation point, kept on device and turned into curves once, at the end.

    Training accuracy comes from the training pass itself (logits before each step: no extra forward pass).
    A linear model's curves on other splits are computed after training from weight snapshots, in one GEMM.
    """

    def __init__(self, data: GroupData, splits: tuple[str, ...], model: torch.nn.Module, device: str):
        self.data, self.splits, self.device = data, splits, device
        self.num_groups = data.num_groups
        self.epochs: list[int] = []
        self.rec: dict[str, list[torch.Tensor]] = {"train": [], "loss": [], **{s: [] for s in splits}}
        self.linear = bool(splits) and not list(model.backbone.parameters())
        self.snapshots: list = []
        self.dual = None
        self.eval = {}
        for s in splits:
            idx = data.indices(SPLITS[s])
            self.eval[s] = (data.x[idx], data.y[idx], data.group[idx])

    def record(self, epoch: int, train_hits, loss: torch.Tensor, model, method: Method, bs: int, dual=None):
        self.epochs.append(epoch)
        self.rec["train"].append(train_hits)
        self.rec["loss"].append(loss)
        if self.linear:
            self.dual = dual  # with the dual form, snapshots are (s, C) states (memaware.dual)
            params = [p.detach().clone() for p in model.heads.parameters()] if dual is None else dual.state()
            self.snapshots.append(params)
            return
        for s, (x, y, g) in self.eval.items():
            pred = method.predict_logits(all_logits(model, x, bs, self.device)).argmax(dim=1).cpu()
            self.rec[s].append(group_correct(pred == y, g, self.num_groups)[0])

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
            group = data.group[data.indices(SPLITS[s])]
            counts = torch.bincount(group[group >= 0], minlength=G).float()
            curves: dict[str, Any] = {}
            if data.num_attrs == data.num_classes:  # majority (a == y) needs comparable values
                for name, mask in (("majority", gy == ga), ("minority", gy != ga)):
                    n = counts[mask].sum()
                    curves[name] = (hits[:, mask].sum(1) / n).tolist() if n > 0 else []
            curves["groups"] = {
                group_name(i, A): (hits[:, i] / counts[i]).tolist() for i in range(G) if counts[i]
            }
            out[s] = curves
        return out


class Selector:
    """Checkpoint selection on validation: keeps the state with the best criterion (later wins ties)."""

    def __init__(self, criterion: str, data: GroupData):
        if criterion == "auto":
            criterion = "val_wga" if data.has_attrs(VAL) else "val_gi_wga"
        if criterion == "val_wga" and not data.has_attrs(VAL):
            raise ConfigError("selection 'val_wga' needs validation attributes (field 'a' >= 0 on split 1)")
        self.criterion, self.data = criterion, data
        idx = data.indices(VAL)
        self.x, self.y = data.x[idx], data.y[idx]
        self.group = data.group[idx] if criterion != "last" else None
        self.best_score, self.best_epoch = -float("inf"), None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.inferred: torch.Tensor | None = None

    def update(self, epoch: int, model, method: Method, batch_size: int, device: str) -> None:
        if self.criterion == "last":
            return
        logits = all_logits(model, self.x, batch_size, device).cpu()
        correct = method.predict_logits(logits).argmax(dim=1) == self.y
        inferred = method.infer_groups(logits, self.y, "val")
        if self.criterion == "val_gi_wga" and inferred is None:
            self.criterion = "val_avg"  # no validation attributes and the method infers no groups
        if self.criterion == "val_avg":
            score = float(correct.float().mean())
        else:
            group, n = {
                "val_wga": (self.group, self.data.num_groups),
                "val_gi_wga": (inferred, 2 * self.data.num_classes),
                "val_worst_class": (self.y, self.data.num_classes),
            }[self.criterion]
            hits, counts = group_correct(correct, group, n)
            score = float((hits[counts > 0] / counts[counts > 0]).min())
        if score >= self.best_score:
            self.best_score, self.best_epoch, self.inferred = score, epoch, inferred
            self.best_state = copy.deepcopy(model.state_dict())
