"""Just Train Twice (Liu et al. 2021): train ERM for T epochs, fix the set of training examples it gets wrong,
then train a new model from scratch with that set upweighted by lambda_up. The error set is computed once, as
in the original (never per batch). Uses no group labels for training. Two phases: ``jtt-id`` (the ERM model) and
the upweighted run."""

from __future__ import annotations

from typing import Any

from ..lazy import lazy_module
from .base import Batch, Method, Phase, TrainContext
from .batched import CrossEntropyGrad
from .erm import ERM
from .registry import register
from .space import Choice, EpochFraction, HParam

torch = lazy_module("torch")


def upweight(errors: torch.Tensor, lambda_up: float) -> torch.Tensor:
    """(n,) bool error set -> (n,) weights: lambda_up on errors, 1 elsewhere (the original upsamples them)."""
    return torch.where(errors, float(lambda_up), 1.0).double()


@register
class JTT(Method):
    name = "jtt"
    rank = 4
    summary = "Just Train Twice: ERM for T epochs, then its errors upweighted"
    batched_loss = CrossEntropyGrad
    hparams = {
        # T is searched as a fraction of the run's epochs (comb 0: a fifth)
        "T": HParam(
            1, "JTT: epochs T of the error-finding ERM model", search={"*": EpochFraction(0.02, 0.5, 0.2)},
            flag="--jtt-epochs", low=1, low_inclusive=True,
        ),
        "lambda_up": HParam(
            20.0, "JTT: upweighting of the error set (Liu et al. used 6 to 100)",
            search={"*": Choice((5, 10, 20, 50, 100))}, low=1, low_inclusive=True, sweep_default=20,
        ),
    }  # fmt: skip

    def __init__(self, errors: torch.Tensor | None = None, **hparams: Any):
        """``errors`` (n_train,) bool: a given error set (skips the first phase)."""
        super().__init__(**hparams)
        self.errors = errors

    def phases(self) -> list[Phase]:
        if self.errors is not None:
            return []
        return [Phase("jtt-id", ERM(), {"epochs": self.T}, "JTT identification")]

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        errors = self.errors
        if errors is None:
            x = ctx.data.x[ctx.train_idx]
            errors = earlier["jtt-id"].predict_logits(x).argmax(dim=1) != ctx.y_train
        self.error_set = errors
        self.example_weights = upweight(errors, self.lambda_up)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.ce(logits[:, 0], batch)

    def describe(self) -> dict[str, Any]:
        errors = getattr(self, "error_set", self.errors)
        size = None if errors is None else int(errors.sum())
        return {"T": self.T, "lambda_up": self.lambda_up, "error_set_size": size}
