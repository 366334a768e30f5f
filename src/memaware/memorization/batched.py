"""The memorization audit's K models, trained at once by the engine's batched mode (``memaware.engine.many``).

Model k trains on the training examples with ``masks[k, i]`` true, with seed ``seeds[k]``: a member with its own
training positions, equal to ``engine.fit`` on the data with the other training examples removed (same initial
weights, optimiser, XRM halves and flips drawn from its own seed). Two-phase MAT runs its XRM phase on the same
subset (batched too), so the shift's p(y | yho) is computed over S_k only. Any classification method and model the
batched mode trains work (linear heads, MLPs, ERM / XRM / MAT / ...); full batch lets members on different
subsets share every step (mini-batches need subsets of one size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from ..data.groups import TRAIN, GroupData
from ..engine import FitResult, TrainConfig
from ..engine.many import Member, train_members
from ..errors import ConfigError
from ..methods import make_method


def train_subset_models(
    data: GroupData,
    method: str,
    masks: torch.Tensor | None,
    config: TrainConfig,
    seeds: Sequence[int],
    model_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
    **method_kwargs: Any,
) -> list[FitResult]:
    """Model k = ``fit`` of ``method`` (built with ``method_kwargs``) on the training examples ``masks[k]``
    ((K, n_train) bool over the training split; None: all of them) with ``config`` and seed ``seeds[k]``; all K in
    one batched program. Returns their ``FitResult``s (models in eval mode, on ``config.device``)."""
    n_train = int((data.split == TRAIN).sum())
    if masks is not None:
        if masks.shape != (len(seeds), n_train):
            raise ConfigError(f"masks must have shape (K, n) = ({len(seeds)}, {n_train}), got {tuple(masks.shape)}")
        if not masks.any(dim=1).all():
            raise ConfigError("every batched model needs at least one held-in example")
    members = []
    for k, seed in enumerate(seeds):
        rows = None if masks is None else torch.nonzero(masks[k]).squeeze(1)
        cfg = dataclasses.replace(config, seed=int(seed), progress=False)
        members.append(Member(make_method(method, **method_kwargs), cfg, dict(model_kwargs or {}), rows))
    return train_members(data, members, label=f"{method} x{len(seeds)} models (batched)", progress=progress)
