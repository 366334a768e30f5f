"""Exact regularized logistic ERM for the linear model f(x) = x^T w, many problems at once.

Objective (paper Sec. 2 with K = 2 and labels s in {-1, +1}):

    P(w) = (1/n) sum_i log(1 + exp(-s_i x_i^T w)) + (lambda/2) ||w||^2.

P is lambda-strongly convex, so damped Newton with an Armijo line search converges to the unique minimizer
from any start, quadratically near the end. Two forms of the same iteration:

* primal (``fit_logistic_primal``): the (p, p) Hessian X^T D X + lambda I; cheaper when p <= n.
* Gram (``fit_logistic_gram``): w = X^T alpha (representer form, paper eq. 9-10), and the Newton step for w
  is mapped to alpha by the push-through identity (X^T D X + lambda I)^{-1} X^T = X^T (D K + lambda I)^{-1},
  K = X X^T. Only the (n, n) Gram matrix is touched, so the cost does not grow with the input dimension p.

Both run in float64 on a batch dimension B (one problem per configuration) and stop when every problem's
primal gradient norm ||grad P(w)|| is below ``tol``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_ARMIJO = 1e-4  # sufficient-decrease constant of the backtracking line search
_MAX_HALVINGS = 40


@dataclass(frozen=True)
class LogisticFit:
    """A batch of fitted models. Shapes: ``alpha`` (B, n) dual coefficients with w = X^T alpha (eq. 10; None
    for a primal fit), ``w`` (B, p) weights (None for a Gram fit without X), ``logits`` (B, n) train logits
    x_i^T w, ``loss`` / ``grad_norm`` / ``converged`` (B,), ``iterations`` the Newton steps taken."""

    alpha: torch.Tensor | None
    w: torch.Tensor | None
    logits: torch.Tensor
    loss: torch.Tensor
    grad_norm: torch.Tensor
    converged: torch.Tensor
    iterations: int


def logistic_objective(w: torch.Tensor, x: torch.Tensor, s: torch.Tensor, lam: float) -> torch.Tensor:
    """P(w) for w (B, p) or (p,), x (B, n, p) or (n, p), s (B, n) or (n,) in {-1, +1}; returns (B,) or ()."""
    v = (x @ w.unsqueeze(-1)).squeeze(-1)
    return F.softplus(-s * v).mean(-1) + 0.5 * lam * (w * w).sum(-1)


def _check(s: torch.Tensor, lam: float) -> None:
    if lam <= 0:
        raise ValueError(f"lambda must be > 0 (strong convexity), got {lam}")
    if not bool(((s == 1) | (s == -1)).all()):
        raise ValueError("labels s must be in {-1, +1}")


def _line_search(
    obj_at: Callable[[torch.Tensor], torch.Tensor],
    f0: torch.Tensor,
    slope: torch.Tensor,
    active: torch.Tensor,
) -> torch.Tensor:
    """Per-problem step t in (0, 1]: halves t until f(t) <= f0 + c t slope (Armijo); inactive ones get 0."""
    t = torch.ones_like(f0)
    todo = active.clone()
    for _ in range(_MAX_HALVINGS):
        ok = obj_at(t) <= f0 + _ARMIJO * t * slope
        todo = todo & ~ok
        if not bool(todo.any()):
            break
        t = torch.where(todo, 0.5 * t, t)
    # a step that never satisfied Armijo is within rounding of f0: keep the tiny step (it cannot hurt much)
    return torch.where(active, t, torch.zeros_like(t))


def fit_logistic_gram(
    k: torch.Tensor, s: torch.Tensor, lam: float, tol: float = 1e-9, max_iter: int = 100
) -> LogisticFit:
    """Newton on alpha with w = X^T alpha, using only the Gram matrix.

    k: (B, n, n) Gram matrices X X^T (float64 recommended); s: (B, n) labels in {-1, +1}; lam > 0.
    The gradient of P at w = X^T alpha is X^T r with r = lam alpha - (1/n) s sigmoid(-s v), v = K alpha, so
    ||grad P||^2 = r^T K r is computed without X.
    """
    _check(s, lam)
    b, n, _ = k.shape
    s = s.to(k.dtype)
    alpha = torch.zeros(b, n, dtype=k.dtype, device=k.device)
    eye = torch.eye(n, dtype=k.dtype, device=k.device)

    def parts(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = (k @ alpha.unsqueeze(-1)).squeeze(-1)
        r = lam * alpha - s * torch.sigmoid(-s * v) / n
        gnorm = (r * (k @ r.unsqueeze(-1)).squeeze(-1)).sum(-1).clamp_min(0).sqrt()
        return v, r, gnorm

    v, r, gnorm = parts(alpha)
    it = 0
    for it in range(1, max_iter + 1):
        active = gnorm > tol
        if not bool(active.any()):
            it -= 1
            break
        dw = torch.sigmoid(v) * torch.sigmoid(-v) / n  # diagonal of the loss Hessian in logit space
        step = -torch.linalg.solve(dw.unsqueeze(-1) * k + lam * eye, r)
        u = (k @ step.unsqueeze(-1)).squeeze(-1)  # change of the logits per unit step
        q0 = (alpha * v).sum(-1)  # alpha^T K alpha = ||w||^2
        q1 = (alpha * u).sum(-1)
        q2 = (step * u).sum(-1)
        f0 = F.softplus(-s * v).mean(-1) + 0.5 * lam * q0
        slope = (r * u).sum(-1)  # grad^T dw = r^T K step

        def obj_at(t: torch.Tensor, v=v, u=u, q0=q0, q1=q1, q2=q2) -> torch.Tensor:
            tt = t.unsqueeze(-1)
            return F.softplus(-s * (v + tt * u)).mean(-1) + 0.5 * lam * (q0 + 2 * t * q1 + t * t * q2)

        t = _line_search(obj_at, f0, slope, active)
        alpha = alpha + t.unsqueeze(-1) * step
        v, r, gnorm = parts(alpha)
    loss = F.softplus(-s * v).mean(-1) + 0.5 * lam * (alpha * v).sum(-1)
    return LogisticFit(alpha=alpha, w=None, logits=v, loss=loss, grad_norm=gnorm, converged=gnorm <= tol,
                       iterations=it)


def fit_logistic_primal(
    x: torch.Tensor, s: torch.Tensor, lam: float, tol: float = 1e-9, max_iter: int = 100
) -> LogisticFit:
    """Newton on w with the (p, p) Hessian (1/n) X^T D X + lam I. x: (B, n, p); s: (B, n) in {-1, +1}."""
    _check(s, lam)
    b, n, p = x.shape
    s = s.to(x.dtype)
    w = torch.zeros(b, p, dtype=x.dtype, device=x.device)
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    xt = x.transpose(1, 2)

    def parts(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = (x @ w.unsqueeze(-1)).squeeze(-1)
        g = (xt @ (-s * torch.sigmoid(-s * v) / n).unsqueeze(-1)).squeeze(-1) + lam * w
        return v, g, g.norm(dim=-1)

    v, g, gnorm = parts(w)
    it = 0
    for it in range(1, max_iter + 1):
        active = gnorm > tol
        if not bool(active.any()):
            it -= 1
            break
        dw = torch.sigmoid(v) * torch.sigmoid(-v) / n
        hess = xt @ (dw.unsqueeze(-1) * x) + lam * eye
        step = -torch.cholesky_solve(g.unsqueeze(-1), torch.linalg.cholesky(hess)).squeeze(-1)
        u = (x @ step.unsqueeze(-1)).squeeze(-1)
        f0 = F.softplus(-s * v).mean(-1) + 0.5 * lam * (w * w).sum(-1)
        slope = (g * step).sum(-1)

        def obj_at(t: torch.Tensor, v=v, u=u, w=w, step=step) -> torch.Tensor:
            tt = t.unsqueeze(-1)
            return F.softplus(-s * (v + tt * u)).mean(-1) + 0.5 * lam * ((w + tt * step) ** 2).sum(-1)

        t = _line_search(obj_at, f0, slope, active)
        w = w + t.unsqueeze(-1) * step
        v, g, gnorm = parts(w)
    loss = F.softplus(-s * v).mean(-1) + 0.5 * lam * (w * w).sum(-1)
    return LogisticFit(alpha=None, w=w, logits=v, loss=loss, grad_norm=gnorm, converged=gnorm <= tol,
                       iterations=it)


def fit_logistic(
    x: torch.Tensor, s: torch.Tensor, lam: float, tol: float = 1e-9, max_iter: int = 100
) -> LogisticFit:
    """Fits P(w) for x (B, n, p), s (B, n): primal Newton when p <= n, Gram (dual) Newton when p > n.

    Always returns ``w`` (B, p); for a Gram fit also ``alpha`` (B, n) with w = X^T alpha (eq. 10).
    """
    x = x.to(torch.float64)
    n, p = x.shape[1], x.shape[2]
    if p <= n:
        return fit_logistic_primal(x, s, lam, tol, max_iter)
    fit = fit_logistic_gram(x @ x.transpose(1, 2), s, lam, tol, max_iter)
    w = (x.transpose(1, 2) @ fit.alpha.unsqueeze(-1)).squeeze(-1)
    return LogisticFit(alpha=fit.alpha, w=w, logits=fit.logits, loss=fit.loss, grad_norm=fit.grad_norm,
                       converged=fit.converged, iterations=fit.iterations)
