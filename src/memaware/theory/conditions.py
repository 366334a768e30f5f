"""Theorem 2.2's two conditions as numbers, and the range checks every theory entry point shares.

The noisy case of Theorem 2.2 asks for d >> log n (noise vectors of different examples nearly orthogonal)
and gamma >> sigma sqrt(d / m), m = rho n the number of majority examples (the spurious feature is learned
before the noise can memorize the majority). Both are asymptotic; here they are reported as ratios, and
``noisy_case`` reads ">>" as "at least ``margin`` times".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


def check_config(
    n: int, d: int, gamma: float, sigma: float, rho: float, lam: float | None = None
) -> None:
    """Raises ``ConfigError`` (one line) unless n >= 2, d >= 1, gamma > 0, sigma >= 0, 1/2 < rho <= 1 and
    lam > 0 (lam None: not checked)."""
    if not (isinstance(n, int) and n >= 2):
        raise ConfigError(f"n must be an integer >= 2, got {n!r}")
    if not (isinstance(d, int) and d >= 1):
        raise ConfigError(f"noise dimension d must be an integer >= 1, got {d!r}")
    if not (math.isfinite(gamma) and gamma > 0):
        raise ConfigError(f"gamma must be finite and > 0, got {gamma}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"sigma must be finite and >= 0, got {sigma}")
    if not (math.isfinite(rho) and 0.5 < rho <= 1.0):
        raise ConfigError(f"rho must be in (0.5, 1] (a agrees with y on a majority), got {rho}")
    if lam is not None and not (math.isfinite(lam) and lam > 0):
        raise ConfigError(f"lambda must be finite and > 0, got {lam}")


@dataclass(frozen=True)
class TheoremConditions:
    """The two conditions of Theorem 2.2 (noisy case) for one configuration.

    ``d_over_log_n`` = d / log n; ``gamma_over_noise`` = gamma / (sigma sqrt(d / m)) (inf when sigma = 0).
    """

    n: int
    d: int
    gamma: float
    sigma: float
    rho: float
    m: float
    d_over_log_n: float
    gamma_over_noise: float

    def noisy_case(self, margin: float = 10.0) -> bool:
        """Whether sigma > 0 and both ratios are >= ``margin`` (the theorem then says P(y_hat = a) -> 1)."""
        return self.sigma > 0 and self.d_over_log_n >= margin and self.gamma_over_noise >= margin


def theorem_conditions(n: int, d: int, gamma: float, sigma: float, rho: float) -> TheoremConditions:
    """Evaluates d / log n and gamma / (sigma sqrt(d / m)), m = rho n (Theorem 2.2, part 2)."""
    check_config(n, d, gamma, sigma, rho)
    m = rho * n
    noise_scale = sigma * math.sqrt(d / m)
    return TheoremConditions(
        n=n, d=d, gamma=gamma, sigma=sigma, rho=rho, m=m,
        d_over_log_n=d / math.log(n),
        gamma_over_noise=gamma / noise_scale if noise_scale > 0 else math.inf,
    )


def noise_curve_d(sigma: float, gamma: float, m: float) -> float:
    """The d at which gamma = sigma sqrt(d / m), i.e. d = m gamma^2 / sigma^2 (inf at sigma = 0)."""
    return m * gamma**2 / sigma**2 if sigma > 0 else math.inf
