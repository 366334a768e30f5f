"""XRM (Pezeshki et al. 2023): twin heads on random halves with label flipping; the environment discovery phase
of MAT. Each head is trained on its half with a class-balanced loss; after every step an example's training label
becomes the held-out head's argmax with probability (p_ho - 1/K) K / (K - 1). Outputs: held-out logits for every
training example, and inferred validation groups from cross-mistakes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models import all_logits
from .base import Batch, Method, TrainContext
from .registry import register


def random_halves(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) int64 in {0, 1}: which head holds example i in; exactly floor/ceil(n/2) each."""
    assign = torch.zeros(n, dtype=torch.long)
    assign[torch.randperm(n, generator=generator)[: n // 2]] = 1
    return assign


def class_balanced_ce(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum over the classes present of the class-mean cross-entropy. logits (b, K), y (b,)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    per_class = torch.zeros(num_classes, dtype=ce.dtype, device=ce.device).index_add(0, y, ce)
    counts = torch.bincount(y, minlength=num_classes).to(ce.dtype)
    return (per_class / counts.clamp_min(1.0)).sum()


def flip_probability(p_heldout_max: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(p_ho - 1/K) K / (K - 1): 0 for a uniform held-out prediction, 1 for a certain one."""
    k = num_classes
    return ((p_heldout_max - 1.0 / k) * k / (k - 1)).clamp(0.0, 1.0)


def flip_labels(labels: torch.Tensor, heldout_logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Replaces each label by the held-out argmax with probability ``flip_probability`` (returns new labels)."""
    p_max, y_ho = heldout_logits.softmax(dim=1).max(dim=1)
    u = torch.rand(p_max.shape, generator=generator).to(p_max.device)
    flip = u < flip_probability(p_max, heldout_logits.shape[1])
    return torch.where(flip, y_ho, labels)


def pick_head(logits: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """(b, H, K), (b,) head index -> (b, K)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), head]


def cross_mistake_groups(logits_ab: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Inferred group y * 2 + [head A or head B mispredicts]. logits_ab (n, 2, K)."""
    wrong = (logits_ab.argmax(dim=2) != y.unsqueeze(1)).any(dim=1)
    return y * 2 + wrong.long()


def rows(values: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """values[pos], without the copy when the batch is the whole training set (the loop passes it in order)."""
    return values if len(pos) == len(values) else values[pos]


class TwinHeads:
    """The XRM bookkeeping shared by ``XRM`` and single-run ``MAT``: halves, dynamic labels, held-out logits."""

    def __init__(self, ctx: TrainContext):
        n = len(ctx.train_idx)
        self.num_classes = ctx.data.num_classes
        self.generator = ctx.generator
        self.held_in = random_halves(n, ctx.generator)
        self.held_out = 1 - self.held_in
        self.labels = ctx.y_train.clone()  # flipped over training

    def loss(self, logits_ab: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """XRM's class-balanced loss of each head on its held-in examples, with the current (flipped) labels."""
        held_in = pick_head(logits_ab, rows(self.held_in, pos).to(logits_ab.device))
        return class_balanced_ce(held_in, rows(self.labels, pos).to(logits_ab.device), self.num_classes)

    def heldout(self, logits_ab: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return pick_head(logits_ab, rows(self.held_out, pos).to(logits_ab.device))

    def flip(self, logits_ab: torch.Tensor, pos: torch.Tensor) -> None:
        ho = self.heldout(logits_ab, pos)
        new = flip_labels(rows(self.labels, pos).to(ho.device), ho, self.generator).cpu()
        if len(pos) == len(self.labels):
            self.labels = new
        else:
            self.labels[pos] = new

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = state["labels"].clone()

    def summary(self, y_train: torch.Tensor) -> dict[str, Any]:
        return {"flipped_fraction": float((self.labels != y_train).float().mean())}


def heldout_logits_pass(model, ctx: TrainContext, heads: tuple[int, int], twins: TwinHeads) -> torch.Tensor:
    """Held-out logits (n_train, K) for every training example, in order, from one sequential eval-mode pass."""
    logits = all_logits(model, ctx.data.x[ctx.train_idx], ctx.config.eval_batch_size, ctx.config.device)
    return twins.heldout(logits[:, list(heads)], torch.arange(len(ctx.train_idx))).float().cpu()


@register
class XRM(Method):
    name = "xrm"
    rank = 5
    summary = "cross-risk minimisation: twin nets, label flipping, inferred groups"
    num_heads = 2
    infers_groups = True
    batched_loss = "xrm"

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        self.twins = TwinHeads(ctx)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.twins.loss(logits, batch.pos)

    def state_dict(self) -> dict[str, Any]:
        return self.twins.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.twins.load_state_dict(state)

    @torch.no_grad()
    def after_step(self, logits: torch.Tensor, batch: Batch, model) -> None:
        self.twins.flip(logits, batch.pos)

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        # XRM is not a predictor; report the twins' average so that accuracies are defined
        return logits.mean(dim=1)

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor:
        return cross_mistake_groups(logits, y)

    @torch.no_grad()
    def outputs(self, model, ctx: TrainContext) -> dict[str, Any]:
        return {
            "heldout_logits": heldout_logits_pass(model, ctx, (0, 1), self.twins),
            **self.twins.summary(ctx.y_train),
        }
