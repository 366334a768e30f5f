"""XRM (Pezeshki et al. 2023): twin heads on random halves with label flipping; the environment discovery phase
of MAT. Each head is trained on its half with a class-balanced loss; after every step an example's training label
becomes the held-out head's argmax with probability (p_ho - 1/K) K / (K - 1). Outputs: held-out logits for every
training example, and inferred validation groups from cross-mistakes."""

from __future__ import annotations

from typing import Any

from ..lazy import lazy_module, no_grad
from .base import Batch, Method, TrainContext
from .batched import BatchedLoss, MemberStack, StackedBatch, softmax_grad
from .registry import register

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


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
    from ..models import all_logits  # models import torch at once: here, not when the registry loads

    logits = all_logits(model, ctx.data.x[ctx.train_idx], ctx.config.eval_batch_size, ctx.config.device)
    return twins.heldout(logits[:, list(heads)], torch.arange(len(ctx.train_idx))).float().cpu()


class XRMGrad(BatchedLoss):
    """XRM's fast path for many members: each example's loss is taken by the head that holds it in,
    L_m = sum_k mean_{i in batch, label_i = k} CE(z_{head(i), i}, label_i) (``class_balanced_ce``), so
    dL_m/dz_{head(i), i} = (softmax - e_{label_i}) / |{j in batch : label_j = label_i}| and 0 on the other head;
    after the step each label flips to the held-out head's argmax with probability (p_ho - 1/K) K / (K - 1)
    (``flip_labels``) against the stream's uniforms."""

    draws_uniforms = True
    shift_invariant = True

    def __init__(self, members: MemberStack):
        super().__init__(members)
        self.held_in = members.per_example(lambda m: m.twins.held_in).bool()  # (S, n, M): head 1 holds i in
        self.labels = members.per_example(lambda m: m.twins.labels)  # (S, n, M) current (flipped) labels
        self.num_classes = members.first.twins.num_classes
        self._step: tuple | None = None

    def grad(self, z: torch.Tensor, batch: StackedBatch) -> torch.Tensor:
        sel, labels = batch.take(self.held_in), batch.take(self.labels)  # (S, b, M)
        self._step = (batch, sel, labels)
        dz, onehot = softmax_grad(torch.where(sel, z[1], z[0]), labels)  # (K, S, b, M)
        if batch.present is not None:
            onehot = onehot * batch.present
        w = (onehot / onehot.sum(dim=2, keepdim=True).clamp_min_(1.0)).sum(dim=0)  # (S, b, M): 1 / count(label)
        held_in = torch.stack([~sel, sel]).to(dz.dtype).unsqueeze(1)  # (2, 1, S, b, M): head h holds i in
        return dz.mul_(w).unsqueeze(0) * held_in

    @no_grad
    def after_step(self, z: torch.Tensor, batch: StackedBatch) -> None:
        if self._step is None or self._step[0] is not batch:
            self._step = (batch, batch.take(self.held_in), batch.take(self.labels))
        _, sel, labels = self._step
        p_max, y_ho = torch.where(sel, z[0], z[1]).softmax(dim=0).max(dim=0)  # the held-out head, (S, b, M)
        flip = batch.uniforms.unsqueeze(-1) < flip_probability(p_max, self.num_classes)
        self.labels = batch.put(self.labels, torch.where(flip, y_ho, labels))
        self._step = None

    def store(self) -> None:
        self.members.store_per_example(self.labels, lambda m, v: setattr(m.twins, "labels", v))


@register
class XRM(Method):
    name = "xrm"
    rank = 5
    summary = "cross-risk minimisation: twin nets, label flipping, inferred groups"
    num_heads = 2
    infers_groups = True
    batched_loss = XRMGrad

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        self.twins = TwinHeads(ctx)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.twins.loss(logits, batch.pos)

    def state_dict(self) -> dict[str, Any]:
        return self.twins.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.twins.load_state_dict(state)

    @no_grad
    def after_step(self, logits: torch.Tensor, batch: Batch, model) -> None:
        self.twins.flip(logits, batch.pos)

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        # XRM is not a predictor; report the twins' average so that accuracies are defined
        return logits.mean(dim=1)

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor:
        return cross_mistake_groups(logits, y)

    @no_grad
    def outputs(self, model, ctx: TrainContext) -> dict[str, Any]:
        return {
            "heldout_logits": heldout_logits_pass(model, ctx, (0, 1), self.twins),
            **self.twins.summary(ctx.y_train),
        }
