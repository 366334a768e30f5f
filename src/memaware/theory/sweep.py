"""Theorem 2.2 checked by training: exact ERM over a (sigma x d x seed) grid of Setup 2.1, next to the
fixed-point prediction (eq. 21-24) for every cell.

All sigmas of one (d, seed) share one draw: ``make_setup21`` gives sigma times a fixed standard-normal noise,
so the data are generated once with sigma = 1 and the noise columns are rescaled. The models of one (d, seed)
are fitted in one batched Newton solve (``fit_logistic_primal`` when d + 2 <= n, else ``fit_logistic_gram`` on
K(sigma) = K_signal + sigma^2 Z Z^T, with Z Z^T computed once).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.groups import TEST, TRAIN, GroupData
from ..data.synthetic import make_setup21
from .conditions import theorem_conditions
from .fixed_point import regime_of, solve_fixed_point_arrays
from .logistic import LogisticFit, fit_logistic_gram, fit_logistic_primal
from .settings import FP_KEYS, SweepConfig, observed_regime


def agreement(cells: list[dict]) -> float | None:
    """Fraction of non-mixed cells with a converged fixed-point solver whose observed regime is the predicted
    one; None when there is no such cell."""
    judged = [c for c in cells if c["solver_converged"]
              and observed_regime(c["p_pred_eq_a"], c["p_pred_eq_y"]) != "mixed"]
    if not judged:
        return None
    hits = sum(observed_regime(c["p_pred_eq_a"], c["p_pred_eq_y"]) == c["predicted_regime"] for c in judged)
    return hits / len(judged)


def draw(cfg: SweepConfig, d: int, seed: int) -> GroupData:
    """The Setup 2.1 draw of one (d, seed) with sigma = 1: train (n) and a balanced test set (n_test)."""
    return make_setup21(n_train=cfg.n, n_val=1, n_test=cfg.n_test, noise_dim=d, gamma=cfg.gamma, sigma=1.0,
                        rho_train=cfg.rho, rho_eval=0.5, jitter=cfg.jitter, seed=seed)


def fit_sigma_batch(
    xtr: torch.Tensor, s: torch.Tensor, sigmas: torch.Tensor, lam: float, tol: float = 1e-9
) -> tuple[torch.Tensor, LogisticFit]:
    """One exact ERM fit per sigma, batched, on x(sigma) = [x_y, gamma x_a, sigma Z].

    xtr: (n, 2 + d) float64 training inputs drawn with sigma = 1; s: (n,) labels in {-1, +1}; sigmas: (S,).
    Returns w (S, 2 + d) and the ``LogisticFit`` (train logits (S, n), grad norms, ...)."""
    n, p = xtr.shape
    scale = torch.ones(len(sigmas), p, dtype=xtr.dtype)
    scale[:, 2:] = sigmas.unsqueeze(1)
    ss = s.expand(len(sigmas), n)
    if p <= n:
        fit = fit_logistic_primal(xtr.unsqueeze(0) * scale.unsqueeze(1), ss, lam, tol)
        return fit.w, fit
    sig, noise = xtr[:, :2], xtr[:, 2:]
    k = sig @ sig.T + (sigmas**2).view(-1, 1, 1) * (noise @ noise.T)  # K(sigma), Z Z^T computed once
    fit = fit_logistic_gram(k, ss, lam, tol)
    w = (fit.alpha @ xtr) * scale  # w = X(sigma)^T alpha (eq. 10)
    return w, fit


def run_sweep(cfg: SweepConfig, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Measures every (sigma, d, seed) cell and attaches the fixed-point prediction; returns the cell dicts
    (keys of theorem.json's "cells"). ``progress(k)`` is called after every k cells."""
    cfg.validate()
    sig_t = torch.tensor(cfg.sigmas, dtype=torch.float64)
    cells: list[dict] = []
    for d in cfg.dims:
        fp = solve_fixed_point_arrays(cfg.n, d, cfg.gamma, list(cfg.sigmas), cfg.rho, cfg.lam,
                                      jitter=cfg.jitter)
        for r in range(cfg.seeds):
            seed = cfg.seed + r
            data = draw(cfg, d, seed)
            tr, te = data.split == TRAIN, data.split == TEST
            xtr = data.x[tr].double()
            s = (2.0 * data.y[tr] - 1.0).double()
            w, fit = fit_sigma_batch(xtr, s, sig_t, cfg.lam, cfg.tol)
            xte = data.x[te]
            # x_test(sigma) w(sigma) = signal part + Z_test (sigma w_noise): no (n_test, p) copy per sigma
            logits = xte[:, :2].double() @ w[:, :2].T + (xte[:, 2:] @ w[:, 2:].float().T).double()
            pred = (logits > 0).long()  # (n_test, S)
            yte, ate = data.y[te].unsqueeze(1), data.a[te].unsqueeze(1)
            minority = (data.a[te] != data.y[te])
            train_acc = ((fit.logits > 0).long() == data.y[tr].unsqueeze(0)).double().mean(1)
            p_a = (pred == ate).double().mean(0)
            p_y = (pred == yte).double().mean(0)
            p_min = (pred[minority] == yte[minority]).double().mean(0)
            for j, sigma in enumerate(cfg.sigmas):
                conv = bool(fp["converged"][j])
                cond = theorem_conditions(cfg.n, d, cfg.gamma, sigma, cfg.rho)
                cells.append({
                    "sigma": float(sigma), "d": int(d), "n": int(cfg.n), "gamma": float(cfg.gamma),
                    "rho": float(cfg.rho), "lambda": float(cfg.lam), "seed": int(seed),
                    "train_acc": float(train_acc[j]), "p_pred_eq_a": float(p_a[j]),
                    "p_pred_eq_y": float(p_y[j]), "minority_test_acc": float(p_min[j]),
                    "predicted_regime": regime_of(float(fp["e"][j]), conv), "solver_converged": conv,
                    "observed_regime": observed_regime(float(p_a[j]), float(p_y[j])),
                    "erm_grad_norm": float(fit.grad_norm[j]), "erm_converged": bool(fit.converged[j]),
                    "fixed_point": {k: float(fp[k][j]) for k in FP_KEYS},
                    "d_over_log_n": cond.d_over_log_n, "gamma_over_noise": cond.gamma_over_noise,
                })
            if progress is not None:
                progress(len(cfg.sigmas))
    return cells
