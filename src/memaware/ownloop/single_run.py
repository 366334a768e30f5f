"""``MATSingleRun``: MAT in one training run (paper Appendix A), for a training loop of your own.

One backbone, three linear heads. Heads A and B are XRM's twins (``XRMTwins``) on the backbone's *detached*
features: each trains on its random half with the class-balanced loss and label flipping, and never moves the
backbone. Head C takes eq. 7's shifted cross-entropy CE(f_C(x_i) + log(p_ho(. | x_i) + 1e-6), y_i) and trains the
backbone, where p_ho comes from the twins' current held-out logits for the *whole* training set: a buffer whose
batch rows are refreshed at every step (``MAT.loss`` / ``_single_run_buffer`` of ``memaware.methods.mat``).
Predict with head C alone (``forward``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.mat import mat_log_shift
from .checks import check_count, check_labels, check_temperature
from .loss import DEFAULT_TEMPERATURE
from .twins import XRMTwins, eval_mode


class MATSingleRun(nn.Module):
    """Backbone + heads A, B (XRM twins, detached features) + head C (MAT's shifted loss, trains the backbone).

    ``backbone`` maps a batch x to (b, feature_dim) features; ``num_train`` examples at positions 0..num_train-1
    (your ``Dataset`` returns each one's position); ``temperature`` as in ``MATLoss`` (0.1, memaware's default);
    ``seed`` seeds the twins' halves and flips. ``y_train`` (num_train,), optional: the training labels up front.
    Without it, labels are recorded as batches arrive and p(y | yho) is estimated over the examples seen so far
    (the whole training set from the second epoch on).

    State (``state_dict``): the heads, the twins' halves, labels and RNG state, and ``heldout_buffer`` (num_train, K)
    the latest held-out logits of every example (zeros, i.e. a uniform prediction, until first seen).

    A step of your loop::

        loss = model.loss(x, y, idx)      # x (b, ...), y (b,), idx (b,) int64 positions
        opt.zero_grad(); loss.backward(); opt.step()   # opt over model.parameters()
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        num_train: int,
        temperature: float = DEFAULT_TEMPERATURE,
        seed: int = 0,
        y_train: torch.Tensor | None = None,
    ):
        super().__init__()
        feature_dim = check_count("feature_dim", feature_dim, 1)
        self.temperature = check_temperature(temperature)
        self.backbone = backbone
        self.twins = XRMTwins(lambda: nn.Linear(feature_dim, num_classes), num_train, num_classes, seed)
        self.head_c = nn.Linear(feature_dim, num_classes)
        self.num_train, self.num_classes = num_train, num_classes
        self.register_buffer("heldout_buffer", torch.zeros(num_train, num_classes))
        if y_train is not None:
            y = check_labels("y_train", y_train, num_classes, num_train)
            self.twins.y_train.copy_(y)
            self.twins.labels.copy_(y)

    def forward(self, x: Any) -> torch.Tensor:
        """x (b, ...) -> (b, K): head C's logits, the predictor (no shift)."""
        return self.head_c(self.backbone(x))

    def loss(self, x: Any, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """XRM's loss of heads A and B on their halves (detached features) + head C's shifted cross-entropy,
        a scalar; the twins' labels flip and the held-out buffer takes this batch's held-out logits.

        x (b, ...), y (b,) original labels, idx (b,) positions in the training set."""
        feats = self.backbone(x)
        logits_c = self.head_c(feats)
        logits_ab = self.twins(feats.detach())  # heads A and B never train the backbone
        # checks y and idx, records first-seen labels, then the twins' loss (before their flip)
        xrm = self.twins.xrm_loss(logits_ab, y, idx)
        pos = idx.to(self.heldout_buffer.device).long()
        with torch.no_grad():
            # the flip above used these same pre-step logits; the buffer takes them now (the engine: after the step)
            self.heldout_buffer[pos] = self.twins.heldout(logits_ab.detach(), idx).to(self.heldout_buffer)
            shift = self._shift(pos).to(device=logits_c.device, dtype=logits_c.dtype)
        return xrm + F.cross_entropy(logits_c + shift, y.to(logits_c.device).long())

    def _shift(self, pos: torch.Tensor) -> torch.Tensor:
        """log(p_ho(. | x_i) + 1e-6) for the batch rows ``pos``, with p(y | yho) over every example seen so far."""
        y_all = self.twins.y_train
        seen = y_all >= 0
        if bool(seen.all()):
            return mat_log_shift(self.heldout_buffer, y_all, self.temperature, self.num_classes, rows=pos)
        where = torch.full_like(y_all, -1)
        where[seen] = torch.arange(int(seen.sum()), device=y_all.device)
        h, y = self.heldout_buffer[seen], y_all[seen]
        return mat_log_shift(h, y, self.temperature, self.num_classes, rows=where[pos])

    @torch.no_grad()
    def heldout_logits(self, x: Any, idx: torch.Tensor) -> torch.Tensor:
        """(b, K) logits of the twin head that never trained on each example (eval mode, no grad)."""
        with eval_mode(self):
            return self.twins.heldout(self.twins(self.backbone(x)), idx)

    @torch.no_grad()
    def infer_groups(self, x: Any, y: torch.Tensor) -> torch.Tensor:
        """(b,) XRM's cross-mistake groups y * 2 + [head A or B mispredicts], for selection without group labels."""
        with eval_mode(self):
            feats = self.backbone(x)
        return self.twins.infer_groups(feats, y)

    def extra_repr(self) -> str:
        return f"num_train={self.num_train}, num_classes={self.num_classes}, temperature={self.temperature}"


__all__ = ["MATSingleRun"]
