"""Leave-one-out oracles for a binary L2-regularised logistic head: exact retraining, the Newton step, the
influence function. Binary labels only (the closed forms use the margin z = v^T x of class 1 over class 0).

Model. ``fit`` with a linear softmax head W (2, d) and coupled weight decay wd minimises
mean_i CE + (wd / 2) |W|^2, whose optimum has w_1 = -w_0 = v / 2; in the margin parameter v that is, times n,

    L(v) = sum_i l(v^T x_i + o_i, y_i) + (lambda / 2) |v|^2,    lambda = n wd / 2,

with l the logistic loss and o_i a fixed logit offset (0 for ERM; MAT's shift s_i1 - s_i0). A bias is a
constant column of x (decayed like the weights, as torch's SGD does). Leaving i out removes its term and keeps
lambda fixed (the standard convention; the mean form would also rescale the L2 term by n / (n - 1)).

At the optimum v, with p~_i = sigmoid(z_i + o_i), w_i = p~_i (1 - p~_i), H = X^T diag(w) X + lambda I and the
leverage h_i = x_i^T H^-1 x_i, removing i moves the margin z_i = v^T x_i to

    newton:     z_i^{-i} = z_i + (p~_i - y_i) h_i / (1 - w_i h_i)   (one Newton step on L_{-i}; Sherman-Morrison)
    influence:  z_i^{-i} = z_i + (p~_i - y_i) h_i                    (first order, no leverage correction)
    loo:        z_i^{-i} = v_{-i}^T x_i, v_{-i} = argmin L_{-i}, found by chord-Newton iterations from v
                (preconditioned by H_{-i}(v), which Sherman-Morrison gives from one Cholesky factor of H)
                until the step is below ``tol`` (examples still moving after ``max_iter`` chord steps finish
                with full damped Newton steps); the fixed point is the exact minimiser.

and the memorization score is eq. 8 with j = i: mem_i = P(y_i; z_i) - P(y_i; z_i^{-i}), P(1; z) = sigmoid(z),
P(0; z) = 1 - sigmoid(z), the predictor f alone (no offset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.groups import GroupData
from ..engine import TrainConfig
from ..errors import ConfigError
from .fitting import check_config, xrm_shift
from .scores import LINEAR_AUDIT_METHODS, MemorizationScores, check_method, train_arrays

ESTIMATORS = ("newton", "loo", "influence")


@dataclass
class LogisticHead:
    """A fitted binary head: ``v`` (d',) float64 over features with an optional constant column; ``lam``."""

    v: torch.Tensor
    lam: float
    bias: bool
    iterations: int

    def design(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) if self.bias else x

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return self.design(x) @ self.v


def _objective(xd: torch.Tensor, yf: torch.Tensor, off: torch.Tensor, v: torch.Tensor, lam: float) -> float:
    z = xd @ v + off
    return float(torch.nn.functional.softplus(z).sum() - (yf * z).sum() + 0.5 * lam * v.dot(v))


def _check_binary(y: torch.Tensor, weight_decay: float) -> None:
    if int(y.max()) > 1 or int(y.min()) < 0:
        raise ConfigError("newton / loo / influence estimators need binary labels (0/1); use subsample or trak")
    if not weight_decay > 0:
        raise ConfigError(
            "newton / loo / influence need weight decay > 0 (an unregularised logistic loss on separable data "
            f"has no minimiser to leave an example out of), got {weight_decay}"
        )


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
    offset: torch.Tensor | None = None,
    bias: bool = False,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> LogisticHead:
    """Damped Newton on L(v) (module doc) to a relative step below ``tol``. x (n, d), y (n,) in {0, 1}."""
    _check_binary(y, weight_decay)
    n = len(y)
    head = LogisticHead(torch.zeros(x.shape[1] + int(bias), dtype=torch.float64), n * weight_decay / 2, bias, 0)
    off = torch.zeros(n, dtype=torch.float64) if offset is None else offset.double()
    head.v, head.iterations = _newton(head.design(x), y.double(), off, head.lam, head.v, tol, max_iter)
    return head


def _newton(xd: torch.Tensor, yf: torch.Tensor, off: torch.Tensor, lam: float, v: torch.Tensor, tol: float,
            max_iter: int) -> tuple[torch.Tensor, int]:
    """Damped Newton from ``v``: gradient and objective in float64, the Hessian in float32 (it only sets the
    step, not the fixed point g = 0, and float32 halves its cost)."""
    x32 = xd.float()
    f = _objective(xd, yf, off, v, lam)
    for it in range(1, max_iter + 1):
        p = torch.sigmoid(xd @ v + off)
        g = xd.t() @ (p - yf) + lam * v
        h = (x32.t() @ (x32 * (p * (1 - p)).float().unsqueeze(1))).double()
        h.diagonal().add_(lam)
        step = torch.cholesky_solve(g.unsqueeze(1), torch.linalg.cholesky(h)).squeeze(1)
        t = 1.0
        while True:  # backtracking keeps the objective decreasing far from the optimum
            f_new = _objective(xd, yf, off, v - t * step, lam)
            if f_new <= f - 1e-4 * t * float(g.dot(step)) or t < 1e-8:
                break
            t *= 0.5
        v, f = v - t * step, f_new
        if float((t * step).abs().max()) <= tol * max(1.0, float(v.abs().max())):
            return v, it
    raise ConfigError(f"logistic fit did not converge in {max_iter} Newton steps; raise the weight decay")


def _state(head: LogisticHead, x: torch.Tensor, y: torch.Tensor, offset: torch.Tensor | None):
    xd = head.design(x)
    z = xd @ head.v
    off = torch.zeros_like(z) if offset is None else offset.double()
    pt = torch.sigmoid(z + off)  # the training loss's probability (with MAT's offset)
    w = pt * (1 - pt)
    hess = xd.t() @ (xd * w.unsqueeze(1))
    hess.diagonal().add_(head.lam)
    chol = torch.linalg.cholesky(hess)
    hinv_x = torch.cholesky_solve(xd.t(), chol)  # (d', n)
    lev = (xd * hinv_x.t()).sum(1)  # h_i = x_i^T H^-1 x_i, never an n x n matrix
    return xd, z, off, pt, w, chol, hinv_x, lev


def p_label(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """P(y; z): sigmoid(z) for y = 1, 1 - sigmoid(z) for y = 0."""
    return torch.sigmoid(torch.where(y == 1, z, -z))


def loo_margins(
    head: LogisticHead,
    x: torch.Tensor,
    y: torch.Tensor,
    estimator: str,
    offset: torch.Tensor | None = None,
    tol: float = 1e-9,
    max_iter: int = 50,
    chunk: int = 256,
) -> dict[str, np.ndarray]:
    """z_i, z_i^{-i} for every training example and the scores (module doc). Returns numpy arrays (n,):
    margin, margin_loo, p_true (P(y_i; z_i)), score, leverage, iterations (loo only)."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator must be one of {', '.join(ESTIMATORS)}, got '{estimator}'")
    xd, z, off, pt, w, chol, hinv_x, lev = _state(head, x, y, offset)
    yf = y.double()
    if estimator == "newton":
        z_loo = z + (pt - yf) * lev / (1 - w * lev)
        iters = None
    elif estimator == "influence":
        z_loo = z + (pt - yf) * lev
        iters = None
    else:
        z_loo, iters = _exact_loo(head, xd, yf, off, w, chol, hinv_x, lev, tol, max_iter, chunk)
    out = {"margin": z, "margin_loo": z_loo, "p_true": p_label(z, y), "leverage": lev}
    out["score"] = out["p_true"] - p_label(z_loo, y)
    if iters is not None:
        out["iterations"] = iters.double()
    return {k: v.numpy() for k, v in out.items()}


def _exact_loo(head, xd, yf, off, w, chol, hinv_x, lev, tol, max_iter, chunk):
    """Chord-Newton on L_{-i} for a chunk of examples at once, V (d', B) warm-started at v."""
    n = len(yf)
    z_loo = torch.empty(n, dtype=torch.float64)
    iters = torch.zeros(n, dtype=torch.long)
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n))
        b = len(idx)
        v = head.v.unsqueeze(1).repeat(1, b)
        u = hinv_x[:, idx]  # H^-1 x_i
        coef = w[idx] / (1 - w[idx] * lev[idx])
        active = torch.ones(b, dtype=torch.bool)
        for it in range(1, max_iter + 1):
            r = torch.sigmoid(xd @ v + off.unsqueeze(1)) - yf.unsqueeze(1)  # (n, B)
            r[idx, torch.arange(b)] = 0.0  # leave example i out of its own column
            g = xd.t() @ r + head.lam * v
            # H_{-i}^-1 g = H^-1 g + u_i (x_i^T H^-1 g) w_i / (1 - w_i h_i)   (Sherman-Morrison)
            hg = torch.cholesky_solve(g, chol)
            step = hg + u * (coef * (xd[idx] * hg.t()).sum(1))
            step[:, ~active] = 0.0
            v = v - step
            size = step.abs().amax(0) / v.abs().amax(0).clamp_min(1.0)
            iters[idx[active]] = it
            active &= size > tol
            if not active.any():
                break
        for j in torch.nonzero(active).squeeze(1).tolist():
            # far-moving examples (the chord's fixed Hessian is too stale): finish with full Newton steps
            keep = torch.arange(n) != int(idx[j])
            v[:, j], extra = _newton(xd[keep], yf[keep], off[keep], head.lam, v[:, j], tol, 100)
            iters[idx[j]] += extra
        z_loo[idx] = (xd[idx] * v.t()).sum(1)
    return z_loo, iters


def linear_scores(
    data: GroupData,
    method: str,
    estimator: str,
    config: TrainConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    temperature: float = 0.1,
) -> MemorizationScores:
    """newton / loo / influence scores (n_train,) of the L2-logistic head that ``method`` with weight decay
    ``config.weight_decay`` converges to. For MAT the offset is the shift from XRM phase 1 on the whole training
    split (``fitting.xrm_shift``), held fixed when i is left out (the LOO is conditional on the shift)."""
    t0 = time.perf_counter()
    check_method(method)
    if method not in LINEAR_AUDIT_METHODS:
        raise ConfigError(
            f"{estimator} models an L2-logistic head ({', '.join(LINEAR_AUDIT_METHODS)}); for {method} use "
            "subsample or trak"
        )
    cfg = check_config(config)
    mk = dict(model_kwargs or {})
    if mk.get("hidden"):
        raise ConfigError(f"{estimator} is for linear heads; for hidden layers use subsample or trak")
    x, y = train_arrays(data)
    _check_binary(y, cfg.weight_decay)
    offset = None
    if method == "mat":
        shift = xrm_shift(data, cfg, temperature, mk)
        offset = shift[:, 1] - shift[:, 0]
    head = fit_logistic(x, y, cfg.weight_decay, offset, bool(mk.get("bias")))
    res = loo_margins(head, x, y, estimator, offset)
    extra = {k: res[k] for k in ("margin", "margin_loo", "leverage", "iterations") if k in res}
    params = {"weight_decay": cfg.weight_decay, "lambda_sum_form": head.lam, "bias": head.bias,
              "newton_iterations": head.iterations,
              **({"temperature": temperature, "xrm_epochs": cfg.epochs, "xrm_lr": cfg.lr} if method == "mat" else {})}
    return MemorizationScores(estimator, method, res["score"], p_true=res["p_true"], extra=extra, params=params,
                              seconds=time.perf_counter() - t0)
