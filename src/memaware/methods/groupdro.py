"""Group DRO (Sagawa et al. 2020, Algorithm 1): minimise the q-weighted sum of per-group losses, where q follows
exponentiated-gradient ascent on the groups' losses with step size eta. Needs training group labels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Method, TrainContext
from .registry import register


def group_mean_losses(losses: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean of ``losses`` (b,) over ``groups`` (b,) in 0..G-1 -> (means (G,), present (G,) bool)."""
    sums = torch.zeros(num_groups, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
    counts = torch.bincount(groups, minlength=num_groups).to(losses.dtype)
    return sums / counts.clamp_min(1.0), counts > 0


def exponentiated_step(q: torch.Tensor, group_losses: torch.Tensor, present: torch.Tensor, eta: float) -> torch.Tensor:
    """q_g <- q_g exp(eta l_g) for the groups in the batch, renormalised (Sagawa et al. 2020, Alg. 1)."""
    q = q * torch.exp(eta * group_losses.detach() * present)
    return q / q.sum()


@register
class GroupDRO(Method):
    name = "groupdro"
    needs_train_groups = True

    def __init__(self, eta: float = 0.01):
        if not eta > 0:
            raise ConfigError(f"GroupDRO eta must be > 0, got {eta}")
        self.eta = eta

    def prepare(self, ctx: TrainContext) -> None:
        self.groups = ctx.group_train
        self.num_groups = ctx.data.num_groups
        self.q = torch.full((self.num_groups,), 1.0 / self.num_groups, dtype=torch.float64)

    def loss(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = (self.groups if len(pos) == len(self.groups) else self.groups[pos]).to(logits.device)
        ce = F.cross_entropy(logits[:, 0], y, reduction="none")
        means, present = group_mean_losses(ce, g, self.num_groups)
        self.q = exponentiated_step(self.q.to(ce.device), means.double(), present, self.eta)
        return (self.q.to(ce.dtype) * means).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q = state["q"].clone()

    def describe(self) -> dict[str, Any]:
        return {"eta": self.eta, "group_weights": self.q.tolist()}
