"""Empirical risk minimisation: mean cross-entropy (weight decay lives in the optimiser, paper eq. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method
from .registry import register


@register
class ERM(Method):
    name = "erm"

    def loss(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, 0], y)
