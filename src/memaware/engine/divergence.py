"""Divergence stops a run: a non-finite loss or weight ends it at once with ``DivergenceError`` (one line: method,
phase, epoch, step, value, a hint), checked at every evaluation and at every epoch's end before the checkpoint is
written, so that the checkpoint on disk is the last finite state and no NaN model is ever evaluated or recorded as
if its accuracies were real. The epoch's per-step losses are already kept by the step machinery: finding the
first bad step costs one reduction per epoch, no synchronisation per step."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DivergenceError

HINT = "lower --lr (or raise --weight-decay / set --clip-grad-norm), and check the features' scale"


def _first_bad_loss(steps: Any) -> tuple[int, float] | None:
    """(global step, value) of the epoch's first non-finite loss, or None."""
    losses = getattr(steps, "losses", None)
    if not losses:
        return None
    values = torch.stack([loss.detach().reshape(()).float() for loss, _ in losses])
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return None
    i = int(bad.to(torch.int8).argmax())
    return steps.steps - len(losses) + i + 1, float(values[i])


def first_bad_weight(model: torch.nn.Module) -> tuple[str, float] | None:
    """(parameter name, a non-finite value) of the model's first non-finite weight, or None."""
    for name, p in model.named_parameters():
        bad = ~torch.isfinite(p.detach())
        if bool(bad.any()):
            return name, float(p.detach()[bad].reshape(-1)[0])
    return None


def check_finite(method: str, phase: str, epoch: int, steps: Any, model: torch.nn.Module | None) -> None:
    """Raises ``DivergenceError`` when the epoch's losses so far or (``model`` given) a weight are not finite."""
    where = f"{method}" + (f" ({phase})" if phase and phase != method else "")
    loss = _first_bad_loss(steps)
    if loss is not None:
        step, value = loss
        raise DivergenceError(
            f"{where} diverged at epoch {epoch}, step {step}: the training loss is {value}; {HINT}",
            method=method, phase=phase, epoch=epoch, step=step, value=value,
        )  # fmt: skip
    weight = first_bad_weight(model) if model is not None else None
    if weight is not None:
        name, value = weight
        raise DivergenceError(
            f"{where} diverged at epoch {epoch}, step {steps.steps}: weight {name} holds {value}; {HINT}",
            method=method, phase=phase, epoch=epoch, step=steps.steps, value=value,
        )  # fmt: skip


__all__ = ["check_finite", "first_bad_weight", "HINT"]
