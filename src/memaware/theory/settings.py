"""A phase-diagram run's settings and how an observed cell is named, importable without torch: ``memaware
theorem`` checks its arguments with them before any work (``theory.sweep`` runs the grid)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from .conditions import check_config

DEFAULT_SIGMAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
DEFAULT_DIMS = (50, 100, 200, 500, 1000, 2000, 4000)
FP_KEYS = ("A", "E", "a", "e", "p_pred_eq_a", "p_pred_eq_y")  # fixed-point numbers stored per cell
OBSERVED_THRESHOLD = 0.9  # a cell is "spurious" if P(y_hat = a) >= 0.9, "core" if P(y_hat = y) >= 0.9


@dataclass(frozen=True)
class SweepConfig:
    """One phase-diagram run. ``seeds`` models per cell, seeds ``seed .. seed + seeds - 1``; test set of
    ``n_test`` examples with rho = 0.5; ``jitter`` as in ``make_setup21``."""

    n: int = 500
    gamma: float = 5.0
    rho: float = 0.9
    lam: float = 1e-3
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    dims: tuple[int, ...] = DEFAULT_DIMS
    seeds: int = 3
    seed: int = 0
    n_test: int = 10000
    jitter: float = 0.12
    tol: float = 1e-9

    def validate(self) -> None:
        """Raises ``ConfigError`` with one line for any out-of-range value."""
        if not self.sigmas or not self.dims:
            raise ConfigError("need at least one sigma and one d")
        for d in self.dims:
            for s in self.sigmas:
                check_config(self.n, d, self.gamma, s, self.rho, self.lam)
        if len(set(self.sigmas)) != len(self.sigmas) or len(set(self.dims)) != len(self.dims):
            raise ConfigError("sigmas and dims must not repeat values")
        if not (isinstance(self.seeds, int) and self.seeds >= 1):
            raise ConfigError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        if not (isinstance(self.n_test, int) and self.n_test >= 2):
            raise ConfigError(f"n_test must be an integer >= 2, got {self.n_test!r}")
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise ConfigError(f"jitter must be finite and >= 0, got {self.jitter}")


def observed_regime(p_pred_eq_a: float, p_pred_eq_y: float) -> str:
    """"spurious" if P(y_hat = a) >= 0.9, "core" if P(y_hat = y) >= 0.9, else "mixed"."""
    if p_pred_eq_a >= OBSERVED_THRESHOLD:
        return "spurious"
    if p_pred_eq_y >= OBSERVED_THRESHOLD:
        return "core"
    return "mixed"


__all__ = ["DEFAULT_SIGMAS", "DEFAULT_DIMS", "FP_KEYS", "OBSERVED_THRESHOLD", "SweepConfig", "observed_regime"]
