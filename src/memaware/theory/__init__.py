"""Theorem 2.2 made measurable (paper Sec. 2 and Appendix F).

* ``theorem_conditions``: the noisy case's two conditions as numbers, d / log n and gamma / (sigma sqrt(d/m)).
* ``solve_fixed_point``: the Appendix F fixed-point system (eq. 21-24) solved for finite n, d, gamma, sigma,
  rho, lambda, with the predicted regime ("core" if e <= 0, "spurious" if e > 0, None if not converged);
  ``boundary_sigma2_d``: where the prediction switches (a curve sigma^2 d = const).
* ``fit_logistic`` (and its primal / Gram forms): exact regularized logistic ERM, batched, in float64.
* ``run_sweep``: both of the above over a (sigma x d x seed) grid of Setup 2.1.

The derivation and every approximation are written down in docs/theory.md.
"""

from .conditions import TheoremConditions, check_config, noise_curve_d, theorem_conditions
from .fixed_point import FixedPoint, boundary_sigma2_d, regime_of, solve_fixed_point, solve_fixed_point_arrays
from .logistic import LogisticFit, fit_logistic, fit_logistic_gram, fit_logistic_primal, logistic_objective
from .sweep import SweepConfig, agreement, observed_regime, run_sweep

__all__ = [
    "FixedPoint",
    "LogisticFit",
    "SweepConfig",
    "TheoremConditions",
    "agreement",
    "boundary_sigma2_d",
    "check_config",
    "fit_logistic",
    "fit_logistic_gram",
    "fit_logistic_primal",
    "logistic_objective",
    "noise_curve_d",
    "observed_regime",
    "regime_of",
    "run_sweep",
    "solve_fixed_point",
    "solve_fixed_point_arrays",
    "theorem_conditions",
]
