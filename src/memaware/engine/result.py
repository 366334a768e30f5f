"""``FitResult``: what a run hands back (the trained model at its selected checkpoint, history, outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.groups import GroupData
from ..evallog import EvalLog
from ..methods import Method
from ..metrics import group_report
from ..models import all_logits
from .config import TrainConfig
from .history import SPLITS


@dataclass
class FitResult:
    """A trained model with its method, history and the checkpoint chosen on validation.

    ``epochs_run`` is less than ``config.epochs`` when the method asked to stop (e.g. a target loss reached).
    """

    model: torch.nn.Module
    method: Method
    config: TrainConfig
    selection: str  # the criterion actually used
    selected_epoch: int
    epochs_run: int
    history: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    val_inferred_groups: torch.Tensor | None = None
    seconds: float = 0.0
    # {criterion: {"epoch", "val_score", "val", "test"}}: what each selection criterion would have chosen
    selection_reports: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None  # the epoch of the checkpoint this run resumed from
    phases: dict[str, FitResult] = field(default_factory=dict)  # the method's earlier runs (MAT: "xrm")
    evaluations: EvalLog | None = None  # every evaluation of the run (memaware.selection reads it after the fact)
    # {"images", "seconds", "images_per_s", "data_wait_s", "evaluation_s", "step_s"} (engine.progress); None when
    # the run resumed a finished checkpoint and trained nothing
    throughput: dict[str, float] | None = None

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, K) outputs of the predicting head (eval mode, batched, on CPU)."""
        logits = all_logits(self.model, x, self.config.eval_batch_size, self.config.device)
        return self.method.predict_logits(logits).cpu()

    def evaluate(self, data: GroupData, split: str) -> dict:
        """``metrics.group_report`` of the selected checkpoint on ``split`` ('train', 'val' or 'test')."""
        idx = data.indices(SPLITS[split])
        pred = self.predict_logits(data.x[idx]).argmax(dim=1)
        return group_report(pred, data.y[idx], data.a[idx], data.num_classes, data.num_attrs)


__all__ = ["FitResult"]
