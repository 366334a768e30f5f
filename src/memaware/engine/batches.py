"""Data order: one epoch's mini-batches of training positions, and the per-position draw weights a method and
``class_balanced`` ask for. The single-run and the many-run modes of the engine draw through these same functions."""

from __future__ import annotations

import torch

from ..methods import Method
from ..methods.balancing import inverse_frequency_weights
from .config import TrainConfig


def epoch_batches(
    n: int, bs: int, generator: torch.Generator, weights: torch.Tensor | None, active: torch.Tensor | None
) -> list[torch.Tensor | None]:
    """One epoch's batches of training positions. None means the whole training set in order (full batch).

    With ``weights``, as many positions as an epoch holds are drawn with replacement in proportion to them (the
    authors' weighted sampler); with ``active``, a shuffled pass over those positions only.
    """
    pool = n if active is None else len(active)
    if weights is not None:
        return list(torch.multinomial(weights, pool, replacement=True, generator=generator).split(bs))
    if active is not None:
        return [active] if bs >= pool else list(active[torch.randperm(pool, generator=generator)].split(bs))
    if bs >= n:
        return [None]
    return list(torch.randperm(n, generator=generator).split(bs))


def sampling_weights(method: Method, cfg: TrainConfig, y_train: torch.Tensor) -> torch.Tensor | None:
    """Per-position draw weights from the method (RWG, JTT), class balance and the active subset; or None."""
    weights = method.example_weights
    if cfg.class_balanced:
        balance = inverse_frequency_weights(y_train if method.active_positions is None else _masked(y_train, method))
        weights = balance if weights is None else weights * balance
    if weights is not None and method.active_positions is not None:
        keep = torch.zeros(len(y_train), dtype=torch.bool)
        keep[method.active_positions] = True
        weights = torch.where(keep, weights, 0.0)
    return None if weights is None else weights.double()


def _masked(y_train: torch.Tensor, method: Method) -> torch.Tensor:
    """Labels where inactive positions get their own value, so that class counts cover the active subset only."""
    labels = torch.full_like(y_train, int(y_train.max()) + 1)
    labels[method.active_positions] = y_train[method.active_positions]
    return labels
