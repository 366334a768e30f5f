"""Numerical solution of the Appendix F fixed-point system (eq. 21-24) for finite n, d, gamma, sigma, rho,
lambda.

With eta = n lambda, m = rho n majority and k = n - m minority examples, and c0 = sigma^2 d (+ the jitter
term, see below) the self-overlap of an example's noise, the dual weights lump into A (majority, = B) and E
(minority, = C), eq. 22, and

    eta A = s(-c0 A - a),   eta E = s(-c0 E + e),                         (eq. 23)
    a = (g^2 + 1) m A - (g^2 - 1) k E,   e = (g^2 - 1) m A - (g^2 + 1) k E,  (eq. 24, g = gamma)

s the logistic sigmoid. docs/theory.md shows this is the stationarity condition of the strictly convex

function

    F(u, v) = m H(u) + k H(v) + 1/(2 eta) [ (m u + k v)^2 + g^2 (m u - k v)^2 + c0 (m u^2 + k v^2) ],

(u = eta A, v = eta E in (0, 1), H(p) = p log p + (1 - p) log(1 - p)): the logistic-regression dual
restricted to lumped weights. So there is exactly one solution, and damped Newton on F finds it. Predicted
regime: "core" if e <= 0, "spurious" if e > 0 (Lemma F.1); None when the solver did not converge (no guess).

Approximations (all listed in docs/theory.md): cross-noise terms sum_{j != i} alpha_j eps_j^T eps_i dropped;
||eps_i||^2 replaced by its mean sigma^2 d; group sizes m = rho n, k = (1 - rho) n; the jitter of x_y and x_a
(make_setup21) enters only through the mean self-overlap jitter^2 (1 + g^2) added to c0 and through the test
logit variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .conditions import check_config

_K_FLOOR = 1e-9  # rho = 1 (no minority) is solved as the limit k -> 0+, which keeps F strictly convex


@dataclass(frozen=True)
class FixedPoint:
    """Solution of eq. 21-24 for one configuration.

    A, E: lumped dual weights (majority, minority); a = gamma w_spu + w_core, e = gamma w_spu - w_core
    (eq. 15); ``residual``: max |eq. 23 violation| in logit units; ``regime``: "core" / "spurious" / None
    (not converged);
    ``p_pred_eq_a`` / ``p_pred_eq_y``: predicted test rates on a balanced test set (rho = 0.5), keeping the
    test-noise term that Lemma F.1 drops in the limit (docs/theory.md, "Test predictions").
    """

    A: float
    E: float
    a: float
    e: float
    converged: bool
    regime: str | None
    residual: float
    iterations: int
    p_pred_eq_a: float
    p_pred_eq_y: float


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _entropy(p: np.ndarray) -> np.ndarray:
    return p * np.log(p) + (1 - p) * np.log1p(-p)


def _ncdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (torch's, to keep scipy an optional dependency)."""
    return torch.special.ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


def solve_fixed_point_arrays(
    n: np.ndarray | float,
    d: np.ndarray | float,
    gamma: np.ndarray | float,
    sigma: np.ndarray | float,
    rho: np.ndarray | float,
    lam: np.ndarray | float,
    jitter: float = 0.0,
    tol: float = 1e-10,
    max_iter: int = 500,
) -> dict[str, np.ndarray]:
    """Vectorized solver: arguments broadcast together (no range checks); returns arrays A, E, a, e, residual,
    converged (bool), iterations, p_pred_eq_a, p_pred_eq_y, all of the broadcast shape."""
    n, d, g, sig, rho, lam = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in
                                                   (n, d, gamma, sigma, rho, lam)))
    m = rho * n
    k = np.maximum(n - m, _K_FLOOR)
    eta = n * lam
    g2 = g * g
    c0 = sig**2 * d + jitter**2 * (1.0 + g2)

    def objective(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        quad = (m * u + k * v) ** 2 + g2 * (m * u - k * v) ** 2 + c0 * (m * u * u + k * v * v)
        return m * _entropy(u) + k * _entropy(v) + quad / (2 * eta)

    def lumps(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
        big_a, big_e = u / eta, v / eta
        a = (g2 + 1) * m * big_a - (g2 - 1) * k * big_e
        e = (g2 - 1) * m * big_a - (g2 + 1) * k * big_e
        # eq. 23 residuals in logit units: logit(eta A) = -(c0 A + a), logit(eta E) = e - c0 E
        r_u = _logit(u) + c0 * big_a + a
        r_v = _logit(v) + c0 * big_e - e
        return big_a, big_e, a, e, r_u, r_v

    def tolerance(u: np.ndarray, v: np.ndarray, a: np.ndarray, e: np.ndarray) -> np.ndarray:
        # tol, or the rounding floor of the residuals if larger: logit(p) loses eps / (1 - p) near p = 1,
        # and the other terms carry eps times their size
        eps = np.finfo(np.float64).eps
        size = 1 / (1 - u) + 1 / (1 - v) + np.abs(a) + np.abs(e) + c0 * (u + v) / eta
        return np.maximum(tol, 64 * eps * size)

    # the Hessian's constant part; the entropy adds m / (u (1 - u)), k / (v (1 - v)) on the diagonal
    h_uu0 = (m * m * (1 + g2) + c0 * m) / eta
    h_vv0 = (k * k * (1 + g2) + c0 * k) / eta
    h_uv = m * k * (1 - g2) / eta

    u = np.full(n.shape, 0.25)
    v = np.full(n.shape, 0.25)
    iters = np.zeros(n.shape, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(max_iter):
            _, _, a, e, r_u, r_v = lumps(u, v)
            res = np.maximum(np.abs(r_u), np.abs(r_v))
            active = ~(res <= tolerance(u, v, a, e)) & np.isfinite(res)
            if not active.any():
                break
            iters += active
            gu, gv = m * r_u, k * r_v  # dF/du, dF/dv
            huu = h_uu0 + m / (u * (1 - u))
            hvv = h_vv0 + k / (v * (1 - v))
            det = huu * hvv - h_uv * h_uv
            du = -(hvv * gu - h_uv * gv) / det
            dv = -(huu * gv - h_uv * gu) / det
            # stay strictly inside (0, 1)^2: at most 99% of the way to the box edge
            t_box = np.ones_like(u)
            for x, dx in ((u, du), (v, dv)):
                lim = np.where(dx < 0, -x / dx, np.where(dx > 0, (1 - x) / dx, np.inf))
                t_box = np.minimum(t_box, 0.99 * lim)
            t = np.where(active, t_box, 0.0)
            f0 = objective(u, v)
            slope = gu * du + gv * dv
            # rounding slack: near the solution F changes by less than its own rounding error, and a strict
            # Armijo test would then shrink the (correct) Newton step to nothing
            slack = 1e-13 * (1.0 + np.abs(f0))
            for _ in range(60):  # Armijo backtracking, per configuration
                bad = active & ~(objective(u + t * du, v + t * dv) <= f0 + 1e-4 * t * slope + slack)
                if not bad.any():
                    break
                t = np.where(bad, 0.5 * t, t)
            u = u + t * du
            v = v + t * dv
        big_a, big_e, a, e, r_u, r_v = lumps(u, v)
        res = np.maximum(np.abs(r_u), np.abs(r_v))
        converged = (res <= tolerance(u, v, a, e)) & np.isfinite(a) & np.isfinite(e)
        # test logit: s w_core + t gamma w_spu + noise (docs/theory.md);
        # w_core = mA + kE, gamma w_spu = g^2 (mA - kE)
        w_core = m * big_a + k * big_e
        gw_spu = g2 * (m * big_a - k * big_e)
        var = sig**4 * d * (m * big_a**2 + k * big_e**2) + jitter**2 * (w_core**2 + gw_spu**2)
        scale = np.sqrt(np.maximum(var, 1e-300))
        phi_a, phi_e = _ncdf(a / scale), _ncdf(e / scale)
    return {
        "A": big_a, "E": big_e, "a": a, "e": e, "residual": res, "converged": converged, "iterations": iters,
        "p_pred_eq_a": 0.5 * phi_a + 0.5 * phi_e, "p_pred_eq_y": 0.5 * phi_a + 0.5 * (1 - phi_e),
    }


def solve_fixed_point(
    n: int, d: int, gamma: float, sigma: float, rho: float, lam: float, jitter: float = 0.0,
    tol: float = 1e-10, max_iter: int = 500,
) -> FixedPoint:
    """Solves eq. 21-24 for one configuration (range-checked: ``ConfigError`` on bad input)."""
    check_config(n, d, gamma, sigma, rho, lam)
    if not (math.isfinite(jitter) and jitter >= 0):
        raise ConfigError(f"jitter must be finite and >= 0, got {jitter}")
    r = solve_fixed_point_arrays(n, d, gamma, sigma, rho, lam, jitter=jitter, tol=tol, max_iter=max_iter)
    conv = bool(r["converged"])
    return FixedPoint(
        A=float(r["A"]), E=float(r["E"]), a=float(r["a"]), e=float(r["e"]), converged=conv,
        regime=regime_of(float(r["e"]), conv), residual=float(r["residual"]), iterations=int(r["iterations"]),
        p_pred_eq_a=float(r["p_pred_eq_a"]), p_pred_eq_y=float(r["p_pred_eq_y"]),
    )


def regime_of(e: float, converged: bool) -> str | None:
    """Lemma F.1: "spurious" if e > 0, "core" if e <= 0; None if the solver did not converge."""
    if not converged:
        return None
    return "spurious" if e > 0 else "core"


def boundary_sigma2_d(
    n: int, gamma: float, rho: float, lam: float, jitter: float = 0.0, hi: float = 1e9
) -> float | None:
    """The noise level c = sigma^2 d at which e changes sign (the predicted phase boundary).

    In eq. 21-24, sigma and d enter only through sigma^2 d, so the boundary is the curve sigma^2 d = c in the
    (sigma, d) plane: "core" below, "spurious" above. Returns None if e <= 0 for every c in [0, hi] (e.g. when
    gamma^2 (2 rho - 1) <= 1, where even pure memorization favours the core feature).
    """
    check_config(n, 1, gamma, 0.0, rho, lam)

    def e_at(c: np.ndarray) -> np.ndarray:
        r = solve_fixed_point_arrays(n, 1.0, gamma, np.sqrt(c), rho, lam, jitter=jitter)
        return np.where(r["converged"], r["e"], np.nan)

    grid = np.concatenate([[0.0], np.geomspace(1e-3, hi, 400)])
    e = e_at(grid)
    pos = np.nonzero(e > 0)[0]
    if len(pos) == 0:
        return None
    i = int(pos[0])
    if i == 0:
        return 0.0
    lo_c, hi_c = grid[i - 1], grid[i]
    for _ in range(60):  # bisection; e is continuous in c
        mid = 0.5 * (lo_c + hi_c)
        if e_at(np.array([mid]))[0] > 0:
            hi_c = mid
        else:
            lo_c = mid
    return float(hi_c)
