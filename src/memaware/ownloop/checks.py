"""Boundary checks shared by the own-loop components: each raises ``ConfigError`` with one line naming the argument
and the value at fault."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError


def shape_of(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def check_count(name: str, value: Any, low: int) -> int:
    """An int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ConfigError(f"temperature must be a float > 0, got {temperature!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature must be a finite float > 0, got {temperature!r}")
    return float(temperature)


def check_labels(name: str, y: Any, num_classes: int, length: int | None = None) -> torch.Tensor:
    """A 1-D integer tensor (of ``length`` entries when given) with values in 0..num_classes-1."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
        raise ConfigError(f"{name} must be a 1-D integer tensor, got {shape_of(y)} {getattr(y, 'dtype', '')}".rstrip())
    if length is not None and len(y) != length:
        raise ConfigError(f"{name} must have shape ({length},), got {tuple(y.shape)}")
    if len(y):
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ConfigError(f"{name} must be in 0..{num_classes - 1} (num_classes = {num_classes}), got {bad}")
    return y.long()


def check_positions(idx: Any, num_train: int, length: int) -> torch.Tensor:
    """Training-set positions: a 1-D integer tensor of ``length`` entries in 0..num_train-1."""
    if not isinstance(idx, torch.Tensor) or idx.dim() != 1 or idx.is_floating_point() or idx.is_complex():
        raise ConfigError(f"idx must be a 1-D integer tensor of positions, got {shape_of(idx)}")
    if len(idx) != length:
        raise ConfigError(f"idx must have one position per example, shape ({length},), got {tuple(idx.shape)}")
    if len(idx):
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= num_train:
            bad = lo if lo < 0 else hi
            raise ConfigError(f"idx must be in 0..{num_train - 1} (num_train = {num_train}), got {bad}")
    return idx.long()


def check_logits(name: str, logits: Any, num_classes: int, batch: int | None = None) -> torch.Tensor:
    """A floating (b, num_classes) tensor (b = ``batch`` when given)."""
    ok = isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] == num_classes
    if not ok or (batch is not None and logits.shape[0] != batch) or not logits.is_floating_point():
        b = "b" if batch is None else str(batch)
        raise ConfigError(f"{name} must have shape ({b}, num_classes) = ({b}, {num_classes}), got {shape_of(logits)}")
    return logits
