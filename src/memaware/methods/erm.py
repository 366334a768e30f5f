"""Empirical risk minimisation: mean cross-entropy (weight decay lives in the optimiser, paper eq. 2)."""

from __future__ import annotations

import torch

from .base import Method
from .registry import register


@register
class ERM(Method):
    name = "erm"

    def loss(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.ce(logits[:, 0], pos, y)
