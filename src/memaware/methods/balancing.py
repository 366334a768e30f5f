"""Data balancing baselines (Idrissi et al. 2022, "Simple data balancing"): group reweighting (RWG) and group
subsampling (SUBG). Both need training group labels; they change which examples the loop draws, not the loss."""

from __future__ import annotations

from typing import Any

from ..lazy import lazy_module
from .base import Batch, Method, TrainContext
from .batched import CrossEntropyGrad
from .registry import register

torch = lazy_module("torch")


def inverse_frequency_weights(labels: torch.Tensor) -> torch.Tensor:
    """(n,) weights 1 / |{j : labels_j = labels_i}|: every label value gets the same total weight."""
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()


def subsample_to_smallest(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sorted positions keeping min-count examples of every label value present, drawn without replacement."""
    counts = torch.bincount(labels)
    smallest = int(counts[counts > 0].min())
    keep = []
    for value in torch.nonzero(counts, as_tuple=False).squeeze(1).tolist():
        members = torch.nonzero(labels == value, as_tuple=False).squeeze(1)
        keep.append(members[torch.randperm(len(members), generator=generator)[:smallest]])
    return torch.cat(keep).sort().values


@register
class RWG(Method):
    """ERM with mini-batches drawn with probability proportional to 1 / |group| (every group equally likely)."""

    name = "rwg"
    display_name = "RWG"
    rank = 3
    summary = "training examples sampled with weight 1/|group|"
    needs_train_groups = True
    batched_loss = CrossEntropyGrad

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        self.example_weights = inverse_frequency_weights(ctx.group_train)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.ce(logits[:, 0], batch)


@register
class SUBG(Method):
    """ERM on a subset with every group cut down to the size of the smallest one (drawn once, seeded)."""

    name = "subg"
    display_name = "SUBG"
    rank = 2
    summary = "every training group subsampled to the smallest"
    needs_train_groups = True
    batched_loss = CrossEntropyGrad

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        self.active_positions = subsample_to_smallest(ctx.group_train, ctx.generator)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.ce(logits[:, 0], batch)

    def describe(self) -> dict[str, Any]:
        kept = None if self.active_positions is None else len(self.active_positions)
        return {"kept_examples": kept}
