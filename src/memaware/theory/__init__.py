"""Theorem 2.2 made measurable (paper Sec. 2 and Appendix F).

* ``theorem_conditions``: the noisy case's two conditions as numbers, d / log n and gamma / (sigma sqrt(d/m)).
* ``solve_fixed_point``: the Appendix F fixed-point system (eq. 21-24) solved for finite n, d, gamma, sigma,
  rho, lambda, with the predicted regime ("core" if e <= 0, "spurious" if e > 0, None if not converged);
  ``boundary_sigma2_d``: where the prediction switches (a curve sigma^2 d = const).
* ``fit_logistic`` (and its primal / Gram forms): exact regularized logistic ERM, batched, in float64.
* ``run_sweep``: both of the above over a (sigma x d x seed) grid of Setup 2.1.

The derivation and every approximation are written down in docs/theory.md.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("TheoremConditions", "check_config", "noise_curve_d", "theorem_conditions"), "conditions"),
    **dict.fromkeys(
        ("FixedPoint", "boundary_sigma2_d", "regime_of", "solve_fixed_point", "solve_fixed_point_arrays"), "fixed_point"
    ),
    **dict.fromkeys(
        ("LogisticFit", "fit_logistic", "fit_logistic_gram", "fit_logistic_primal", "logistic_objective"), "logistic"
    ),
    **dict.fromkeys(("SweepConfig", "observed_regime"), "settings"),
    **dict.fromkeys(("agreement", "run_sweep"), "sweep"),
}
# imported on first use (memaware.lazy): ``theory.settings`` serves the command line without torch
__getattr__ = lazy_exports("memaware.theory", {k: f"memaware.theory.{m}" for k, m in _EXPORTS.items()})

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
