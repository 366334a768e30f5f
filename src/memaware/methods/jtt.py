"""Just Train Twice (Liu et al. 2021): train ERM for T epochs, fix the set of training examples it gets wrong,
then train a new model from scratch with that set upweighted by lambda_up. The error set is computed once, as
in the original (never per batch). Uses no group labels for training."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..errors import ConfigError
from .base import Method, TrainContext
from .registry import register


def upweight(errors: torch.Tensor, lambda_up: float) -> torch.Tensor:
    """(n,) bool error set -> (n,) weights: lambda_up on errors, 1 elsewhere (the original upsamples them)."""
    return torch.where(errors, float(lambda_up), 1.0).double()


@register
class JTT(Method):
    name = "jtt"

    def __init__(self, T: int = 1, lambda_up: float = 20.0, errors: torch.Tensor | None = None):
        if T < 1:
            raise ConfigError(f"JTT T (epochs of the identification model) must be >= 1, got {T}")
        if not lambda_up >= 1:
            raise ConfigError(f"JTT lambda_up must be >= 1, got {lambda_up}")
        self.T, self.lambda_up, self.errors = int(T), float(lambda_up), errors

    def prepare(self, ctx: TrainContext) -> None:
        if self.errors is None:
            from ..train import fit  # the same loop trains the identification model

            path = ctx.checkpoint.with_name(ctx.checkpoint.stem + ".jtt-id.pt") if ctx.checkpoint else None
            cfg = dataclasses.replace(
                ctx.config, epochs=self.T, selection="last", history_splits=(), progress_label="JTT identification"
            )
            first = fit(
                ctx.data, "erm", cfg, model_kwargs=ctx.model_kwargs, model_factory=ctx.model_factory, checkpoint=path
            )
            x = ctx.data.x[ctx.train_idx]
            self.errors = first.predict_logits(x).argmax(dim=1) != ctx.y_train
        self.example_weights = upweight(self.errors, self.lambda_up)

    def loss(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.ce(logits[:, 0], pos, y)

    def describe(self) -> dict[str, Any]:
        n_err = None if self.errors is None else int(self.errors.sum())
        return {"T": self.T, "lambda_up": self.lambda_up, "error_set_size": n_err}
