"""memaware.theory: Theorem 2.2's conditions, the Appendix F fixed point (eq. 21-24), the exact ERM solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memaware.data.synthetic import make_setup21
from memaware.errors import ConfigError
from memaware.theory import (
    boundary_sigma2_d,
    fit_logistic,
    fit_logistic_gram,
    fit_logistic_primal,
    logistic_objective,
    regime_of,
    solve_fixed_point,
    solve_fixed_point_arrays,
    theorem_conditions,
)

scipy_optimize = pytest.importorskip("scipy.optimize")


# ---------------------------------------------------------------- conditions


def test_conditions_are_the_two_ratios():
    c = theorem_conditions(n=500, d=4000, gamma=5.0, sigma=0.5, rho=0.9)
    assert c.m == pytest.approx(450.0)
    assert c.d_over_log_n == pytest.approx(4000 / math.log(500))
    assert c.gamma_over_noise == pytest.approx(5.0 / (0.5 * math.sqrt(4000 / 450)))
    assert theorem_conditions(500, 4000, 5.0, 0.0, 0.9).gamma_over_noise == math.inf
    assert theorem_conditions(10_000, 20_000, 50.0, 0.1, 0.9).noisy_case()
    assert not theorem_conditions(500, 4000, 5.0, 0.0, 0.9).noisy_case()  # sigma = 0: noiseless case
    assert not theorem_conditions(500, 4000, 5.0, 1.0, 0.9).noisy_case()  # gamma / (sigma sqrt(d/m)) ~ 1.7


@pytest.mark.parametrize("kwargs, word", [
    ({"sigma": -0.1}, "sigma"), ({"d": 0}, "noise dimension"), ({"rho": 0.5}, "rho"), ({"rho": 1.2}, "rho"),
    ({"lam": 0.0}, "lambda"), ({"lam": -1e-3}, "lambda"), ({"gamma": float("nan")}, "gamma"),
    ({"n": 1}, "n "),
])
def test_bad_configuration_is_a_one_line_config_error(kwargs, word):
    args = {"n": 100, "d": 10, "gamma": 5.0, "sigma": 0.5, "rho": 0.9, "lam": 1e-3} | kwargs
    with pytest.raises(ConfigError) as err:
        solve_fixed_point(**args)
    assert word in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- fixed point


def _eq23_residual(fp, n, d, gamma, sigma, rho, lam):
    """Plugs A, E back into eq. 23-24 independently of the solver."""
    eta, m, k, g2, c0 = n * lam, rho * n, (1 - rho) * n, gamma**2, sigma**2 * d
    a = (g2 + 1) * m * fp.A - (g2 - 1) * k * fp.E
    e = (g2 - 1) * m * fp.A - (g2 + 1) * k * fp.E
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    return a, e, abs(eta * fp.A - sig(-c0 * fp.A - a)), abs(eta * fp.E - sig(-c0 * fp.E + e))


@pytest.mark.parametrize("n, gamma, rho, lam", [(500, 5.0, 0.9, 1e-3), (200, 2.0, 0.8, 1e-2),
                                                (1000, 8.0, 0.6, 1e-4), (50, 1.5, 0.99, 1e-3)])
def test_noiseless_limit_is_core(n, gamma, rho, lam):
    for sigma in (0.0, 1e-4):
        fp = solve_fixed_point(n, 1000, gamma, sigma, rho, lam)
        assert fp.converged and fp.regime == "core" and fp.e <= 0 and fp.a > 0
        a, e, r1, r2 = _eq23_residual(fp, n, 1000, gamma, sigma, rho, lam)
        assert (a, e) == pytest.approx((fp.a, fp.e), rel=1e-12) and max(r1, r2) < 1e-10


@pytest.mark.parametrize("n, gamma, rho", [(500, 5.0, 0.9), (200, 2.0, 0.8), (1000, 1.5, 0.8),
                                           (100, 3.0, 0.6)])
def test_large_noise_is_spurious_when_gamma_and_rho_favour_the_attribute(n, gamma, rho):
    # e > 0 at large sigma^2 d needs gamma^2 (2 rho - 1) > 1 (docs/theory.md); all cases here satisfy it
    assert gamma**2 * (2 * rho - 1) > 1
    for d, sigma in ((10_000, 1.0), (100_000, 0.5), (4000, 3.0)):
        fp = solve_fixed_point(n, d, gamma, sigma, rho, 1e-3)
        assert fp.converged and fp.regime == "spurious" and fp.e > 0 and fp.a > 0
        assert max(_eq23_residual(fp, n, d, gamma, sigma, rho, 1e-3)[2:]) < 1e-10


def test_weak_spurious_feature_stays_core_at_any_noise():
    # gamma^2 (2 rho - 1) = 1.44 * 0.2 < 1: memorizing everything still leaves w_core > gamma w_spu
    assert all(solve_fixed_point(200, 10**6, 1.2, s, 0.6, 1e-3).regime == "core" for s in (0.1, 1.0, 10.0))
    assert boundary_sigma2_d(200, 1.2, 0.6, 1e-3) is None


def test_boundary_is_where_e_changes_sign_and_depends_on_sigma2_d_only():
    c = boundary_sigma2_d(500, 5.0, 0.9, 1e-3)
    assert 100 < c < 250  # ~151 at the CLI defaults
    for d in (200, 1000, 4000):
        s_star = math.sqrt(c / d)
        assert solve_fixed_point(500, d, 5.0, 0.98 * s_star, 0.9, 1e-3).regime == "core"
        assert solve_fixed_point(500, d, 5.0, 1.02 * s_star, 0.9, 1e-3).regime == "spurious"


def test_non_convergence_is_reported_not_guessed():
    fp = solve_fixed_point(500, 4000, 5.0, 0.5, 0.9, 1e-3, max_iter=1)
    assert not fp.converged and fp.regime is None
    assert regime_of(1.0, converged=False) is None
    r = solve_fixed_point_arrays(500, np.array([100.0, 4000.0]), 5.0, np.array([[0.0], [1.0]]), 0.9, 1e-3)
    assert r["e"].shape == (2, 2) and r["converged"].all()


def test_solver_converges_over_a_wide_range_of_configurations():
    grids = np.meshgrid([20, 500, 10**5], [1.01, 2.0, 5.0, 100.0], [0.51, 0.7, 0.9, 0.99, 1.0],
                        [1e-7, 1e-3, 1e-1, 10.0], np.sqrt([0, 1e-3, 1, 100, 1e4, 1e8]), indexing="ij")
    n, gamma, rho, lam, sigma = (g.ravel() for g in grids)
    r = solve_fixed_point_arrays(n, 1.0, gamma, sigma, rho, lam, jitter=0.12)
    assert r["converged"].all() and (r["a"] > 0).all() and r["iterations"].max() <= 30
    # at c0 = 0, eq. 23 reads eta E = sig(e): e <= 0 exactly when the minority is fitted (eta E <= 1/2)
    z = sigma == 0
    r0 = solve_fixed_point_arrays(n[z], 1.0, gamma[z], 0.0, rho[z], lam[z])
    fitted = n[z] * lam[z] * r0["E"] <= 0.5
    assert np.array_equal(r0["e"] <= 0, fitted)
    assert fitted[(lam[z] <= 1e-3) & (rho[z] < 1)].all()  # small lambda: always core without noise


@pytest.mark.parametrize("n, d, sigma", [(60, 6000, 0.3), (60, 6000, 1.0), (100, 10_000, 0.5)])
def test_fixed_point_matches_exact_erm_when_d_much_larger_than_n(n, d, sigma):
    # without jitter the only approximations left: cross-noise terms dropped, ||eps_i||^2 ~ sigma^2 d
    data = make_setup21(n_train=n, n_val=1, n_test=1, noise_dim=d, gamma=5.0, sigma=sigma, rho_train=0.9,
                        jitter=0.0, seed=3)
    tr = data.split == 0
    fit = fit_logistic(data.x[tr].double().unsqueeze(0), (2.0 * data.y[tr] - 1).double().unsqueeze(0), 1e-3)
    w = fit.w[0]
    a_erm, e_erm = (5 * w[1] + w[0]).item(), (5 * w[1] - w[0]).item()
    fp = solve_fixed_point(n, d, 5.0, sigma, 0.9, 1e-3)
    assert fp.a == pytest.approx(a_erm, rel=0.05) and fp.e == pytest.approx(e_erm, rel=0.05)


# ---------------------------------------------------------------- exact ERM


def _scipy_reference(x: torch.Tensor, s: torch.Tensor, lam: float) -> np.ndarray:
    def fun(w):
        wt = torch.from_numpy(w).requires_grad_(True)
        f = logistic_objective(wt, x, s, lam)
        f.backward()
        return f.item(), wt.grad.numpy()

    r = scipy_optimize.minimize(fun, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B",
                                options={"gtol": 1e-11, "ftol": 0.0, "maxiter": 50_000})
    return r.x


def _problem(n: int, d: int, sigma: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = make_setup21(n_train=n, n_val=1, n_test=1, noise_dim=d, sigma=sigma, seed=seed)
    tr = data.split == 0
    return data.x[tr].double(), (2.0 * data.y[tr] - 1).double()


@pytest.mark.parametrize("n, d, sigma", [(80, 10, 0.5), (40, 150, 0.5), (40, 150, 0.0)])
def test_erm_solver_matches_scipy_reference(n, d, sigma):
    x, s = _problem(n, d, sigma, seed=1)
    lam = 1e-3
    fit = fit_logistic(x.unsqueeze(0), s.unsqueeze(0), lam)
    assert fit.converged.all() and fit.grad_norm.max() <= 1e-9
    assert (fit.alpha is None) == (d + 2 <= n)  # primal for p <= n, Gram (dual) otherwise
    w_ref = torch.from_numpy(_scipy_reference(x, s, lam))
    torch.testing.assert_close(fit.w[0], w_ref, atol=1e-6, rtol=1e-6)
    assert fit.loss[0].item() == pytest.approx(logistic_objective(w_ref, x, s, lam).item(), rel=1e-9)
    # the train logits it reports are those of its weights
    torch.testing.assert_close(fit.logits[0], x @ fit.w[0])


def test_primal_and_gram_forms_agree_and_batching_changes_nothing():
    problems = [_problem(50, 30, sig, seed) for sig, seed in ((0.2, 0), (1.0, 1), (0.0, 2))]
    x = torch.stack([p[0] for p in problems])
    s = torch.stack([p[1] for p in problems])
    primal = fit_logistic_primal(x, s, 1e-2)
    gram = fit_logistic_gram(x @ x.transpose(1, 2), s, 1e-2)
    w_gram = (x.transpose(1, 2) @ gram.alpha.unsqueeze(-1)).squeeze(-1)  # w = X^T alpha (eq. 10)
    torch.testing.assert_close(primal.w, w_gram, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(primal.loss, gram.loss, atol=1e-12, rtol=1e-12)
    for b in range(3):
        alone = fit_logistic_primal(x[b:b + 1], s[b:b + 1], 1e-2)
        torch.testing.assert_close(alone.w[0], primal.w[b], atol=1e-10, rtol=1e-10)


def test_dual_coefficients_are_the_papers_alpha():
    # eq. 9: alpha_i = (pi_i - sigmoid(v_i)) / eta with eta = n lambda, pi_i = 1{y_i = +1}
    x, s = _problem(30, 200, 0.7, seed=4)
    lam = 1e-3
    fit = fit_logistic(x.unsqueeze(0), s.unsqueeze(0), lam)
    pi = (s > 0).double()
    alpha_eq9 = (pi - torch.sigmoid(fit.logits[0])) / (30 * lam)
    torch.testing.assert_close(fit.alpha[0], alpha_eq9, atol=1e-6, rtol=1e-6)  # alpha scale ~ 1/eta = 33


def test_erm_rejects_bad_labels_and_lambda():
    x, s = _problem(20, 5, 0.5, seed=0)
    with pytest.raises(ValueError, match="lambda"):
        fit_logistic(x.unsqueeze(0), s.unsqueeze(0), 0.0)
    with pytest.raises(ValueError, match="labels"):
        fit_logistic(x.unsqueeze(0), (s > 0).double().unsqueeze(0), 1e-3)
