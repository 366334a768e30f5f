"""Empirical risk minimisation: mean cross-entropy (weight decay lives in the optimiser, paper eq. 2)."""

from __future__ import annotations

from ..lazy import lazy_module
from .base import Batch, Method
from .batched import CrossEntropyGrad
from .registry import register

torch = lazy_module("torch")


@register
class ERM(Method):
    name = "erm"
    rank = 0
    summary = "empirical risk minimisation"
    batched_loss = CrossEntropyGrad

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.ce(logits[:, 0], batch)
