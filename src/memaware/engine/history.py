"""Per-group accuracy curves of a run (``History``: the paper's Fig. 1 panels), kept apart from the loop so that
both stay short and testable. Selection is ``engine.evaluation`` + ``memaware.selection``."""

from __future__ import annotations

from typing import Any

import torch

from ..data.groups import TEST, TRAIN, VAL, GroupData, group_name
from ..methods import Method
from ..metrics import group_correct
from ..models import all_logits

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
