"""The interface every method implements. A method defines its loss and label bookkeeping; the one training
loop in ``memaware.train`` owns data order, optimisation, evaluation and checkpoint selection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ..data.groups import GroupData
    from ..models import MultiHeadNet
    from ..train import TrainConfig


@dataclass
class TrainContext:
    """What a method may know about the run: the data, the training positions and a seeded generator."""

    data: GroupData
    train_idx: torch.Tensor  # (n_train,) row indices of the training split in ``data``
    config: TrainConfig
    generator: torch.Generator
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # builds a fresh model with the given number of heads (end-to-end backbones); None: ``build_model``
    model_factory: Callable[[int], torch.nn.Module] | None = None
    # the run's checkpoint file, if any: nested runs (MAT's phase 1, JTT's first model) checkpoint beside it
    checkpoint: Path | None = None

    @property
    def y_train(self) -> torch.Tensor:
        return self.data.y[self.train_idx]

    @property
    def group_train(self) -> torch.Tensor:
        """(n_train,) group ids y * A + a of the training split (-1 where the attribute is unknown)."""
        return self.data.group[self.train_idx]


class Method:
    """Base class. Subclasses set ``name`` and ``num_heads`` and override ``loss``.

    Logits arrive as (b, H, K) for a batch; ``pos`` (b,) are positions in the training split (0..n_train-1),
    stable across epochs, so per-example state (flipped labels, held-out logits, logit shifts) is indexed by them.
    A batch that holds all n_train positions is the whole training set in order (``xrm.rows`` relies on it).
    """

    name: ClassVar[str] = "base"
    num_heads: ClassVar[int] = 1
    needs_train_groups: ClassVar[bool] = False
    task: ClassVar[str] = "classification"  # or "regression": no group metrics, no validation selection
    # True when ``forward`` equals ``model(x)`` for a linear model (no backbone), which lets the loop train it
    # through the Gram matrix (memaware.dual); a subclass that overrides ``forward`` must opt in explicitly
    plain_linear_forward: ClassVar[bool] = True

    # Set in ``prepare`` by methods that rebalance the training set (RWG, JTT): a weight per training position.
    # The loop samples mini-batches with replacement in proportion to them (the authors' weighted sampler); in
    # full-batch mode it hands them back as ``loss_weights`` (same expected loss) for ``ce`` to apply.
    example_weights: torch.Tensor | None = None
    # Set in ``prepare`` by methods that train on a subset (SUBG): the training positions kept, each epoch
    # a shuffled pass over them.
    active_positions: torch.Tensor | None = None
    # Set by the loop: per-position weights (mean 1) to apply in the loss, or None (see ``example_weights``).
    loss_weights: torch.Tensor | None = None

    def ce(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of (b, K) logits, weighted by ``loss_weights[pos]`` when the loop set them."""
        if self.loss_weights is None:
            return F.cross_entropy(logits, y)
        w = self.loss_weights.to(logits.device)
        w = w if len(pos) == len(w) else w[pos.to(w.device)]
        return (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()

    def state_dict(self) -> dict[str, Any]:
        """Training state that changes step by step (flipped labels, group weights), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores ``state_dict()``; called after ``prepare`` when a run resumes from a checkpoint."""

    def prepare(self, ctx: TrainContext) -> None:
        """Called once before training (e.g. draw XRM's halves, run MAT's phase 1)."""

    def forward(self, model: MultiHeadNet, x: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, H, K) logits used by ``loss``; override to route gradients (single-run MAT)."""
        return model(x)

    def loss(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor, model: torch.nn.Module) -> None:
        """Called after each optimiser step with the (pre-step, detached) training logits."""

    def should_stop(self) -> bool:
        """Asked after every epoch; True ends training early (e.g. a target loss reached)."""
        return False

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(n, H, K) -> (n, K): the logits the method predicts with (head 0 by default)."""
        return logits[:, 0]

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor | None:
        """Inferred group ids for validation examples (y * 2 + flag), or None if the method infers none."""
        return None

    @torch.no_grad()
    def outputs(self, model: MultiHeadNet, ctx: TrainContext) -> dict[str, Any]:
        """Extra results after training (e.g. XRM's held-out logits)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Hyper-parameters, for results files."""
        return {}
