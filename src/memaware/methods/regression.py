"""Least-squares regression for (ensembles of) models, trained until the training MSE is below a target.

Outputs (n, E, 1) or (n, E) of E ensemble members are fitted to targets y (n, E); each member's loss is its own
mean squared error, so summing them keeps the members' gradients independent. A member whose full-batch MSE
falls below ``target_mse`` is frozen at the parameters of that step (later steps restore them), so it ends where
it would have ended alone; training stops when every member has reached the target or at the step cap.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..lazy import lazy_module, no_grad
from .base import Batch, Method, TrainContext
from .registry import register

torch = lazy_module("torch")


@register
class MSERegression(Method):
    name = "mse"
    summary = "least squares until the training MSE is below a target (paper Setup C.1)"
    task = "regression"
    analytic_gradient = True

    def __init__(self, target_mse: float | None = 1e-6):
        if target_mse is not None and not target_mse > 0:
            raise ConfigError(f"target_mse must be > 0, got {target_mse}")
        self.target_mse = target_mse

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        if self.target_mse is not None and 0 < ctx.config.batch_size < len(ctx.train_idx):
            raise ConfigError("a target MSE is checked on the full training set: use batch_size=0 (full batch)")
        self.members = members = 1 if ctx.data.y.dim() == 1 else ctx.data.y.shape[1]
        self.steps = torch.zeros(members, dtype=torch.long)  # step at which each member reached the target
        self.final_mse = torch.full((members,), float("nan"))
        self.done = torch.zeros(members, dtype=torch.bool)
        self.frozen: list[torch.Tensor] = []
        self.step = 0
        self.single_done = False
        self.batch_mse: torch.Tensor | None = None  # (E,) of the step's loss, read by after_step
        self.inv_n: tuple | None = None  # ((shape, dtype, device), the mean's backward (n, E)): loss_and_gradient

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.reshape(logits.shape[0], -1)  # (n, E)

    def _member_mse(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = self.predict_logits(logits)
        return (pred - y.reshape(pred.shape)).pow(2).mean(dim=0)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        mse = self._member_mse(logits, batch.y)
        self.batch_mse = mse.detach()  # after_step reads it: the same numbers, not computed twice per step
        return mse.sum()

    @no_grad
    def loss_and_gradient(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss`` and its gradient w.r.t. ``logits`` (same shape), for the engine's analytic strategy.

        sum_e mean_i (p_ie - y_ie)^2 has gradient (1 / n) * (2 (p - y)). It is computed as autograd's backward of
        ``loss`` computes it: the mean's backward (a fresh (n, E) tensor of 1/n in the logits' dtype) times the
        square's (2 (p - y)), in that operand order, so that values and memory layout (which fixes the order of
        the bias gradient's sum over n) agree bit for bit.
        """
        pred = self.predict_logits(logits)
        diff = pred - batch.y.reshape(pred.shape)
        mse = diff.pow(2).mean(dim=0)
        self.batch_mse = mse
        key = diff.shape, diff.dtype, diff.device
        if self.inv_n is None or self.inv_n[0] != key:
            ones = torch.ones((), dtype=diff.dtype, device=diff.device)
            self.inv_n = key, ones.expand(diff.shape[1:]).unsqueeze(0).expand(diff.shape) / diff.shape[0]
        return mse.sum(), (self.inv_n[1] * (2.0 * diff)).view(logits.shape)

    @no_grad
    def after_step(self, logits: torch.Tensor, batch: Batch, model) -> None:
        # of the pre-step logits, as the loss saw them (computed there unless a caller steps without ``loss``)
        mse = self.batch_mse if self.batch_mse is not None else self._member_mse(logits, batch.y)
        self.batch_mse = None
        self.step += 1
        if self.members == 1:  # a single model: Python scalars only (this runs every step), tensors in ``outputs``
            self.single_mse = float(mse)
            self.single_done = self.target_mse is not None and self.single_mse < self.target_mse
            return  # the loop stops right after this step when done
        self.last_mse = mse.cpu()
        running = ~self.done
        self.final_mse[running] = self.last_mse[running]
        self.steps[running] = self.step
        if self.target_mse is None:
            return
        newly = running & (self.last_mse < self.target_mse)
        params = list(model.parameters())
        if any(p.shape[0] != len(self.done) for p in params):
            raise ConfigError(f"{len(self.done)} targets per example need an ensemble with as many members")
        if newly.any():
            if not self.frozen:
                self.frozen = [p.detach().clone() for p in params]
            for p, keep in zip(params, self.frozen, strict=True):
                keep[newly] = p[newly]
            self.done |= newly
        if self.done.any() and not self.done.all():
            for p, keep in zip(params, self.frozen, strict=True):
                p[self.done] = keep[self.done]

    def should_stop(self) -> bool:
        if self.members == 1:
            return self.single_done
        return self.target_mse is not None and bool(self.done.all())

    def outputs(self, model, ctx: TrainContext) -> dict[str, Any]:
        if self.members == 1 and self.step:
            self.final_mse[0], self.steps[0], self.done[0] = self.single_mse, self.step, self.single_done
        if self.frozen:  # the finished members end at their frozen parameters
            with torch.no_grad():
                for p, keep in zip(model.parameters(), self.frozen, strict=True):
                    p[self.done] = keep[self.done]
        return {
            "steps": self.steps.tolist(),
            "train_mse": self.final_mse.tolist(),
            "reached_target": self.done.tolist(),
        }

    def describe(self) -> dict[str, Any]:
        return {"target_mse": self.target_mse}
