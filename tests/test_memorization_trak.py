"""trak: the diagonal against the explicit n x n formula, gradients, projection, refusals, known cases,
and the optional traker cross-check."""

import numpy as np
import pytest
import torch
from test_memorization_linear import _designed

from memaware.data import make_setup21
from memaware.engine import TrainConfig
from memaware.errors import ConfigError
from memaware.memorization import self_influence, train_full_models, trak_scores
from memaware.memorization.trak import margin_grads, project, projection_block, select_params
from memaware.memorization.trak_adapter import traker_available, traker_self_influence

MLP_CFG = TrainConfig(epochs=150, lr=1e-2, optimizer="adam", selection="last")


@pytest.fixture(scope="module")
def mlp():
    data = make_setup21(n_train=120, n_val=10, n_test=10, noise_dim=30, seed=0)
    idx = data.indices(0)
    models = train_full_models(data, "erm", MLP_CFG, 2, {"hidden": (16,), "bias": True})
    return data.x[idx], data.y[idx], models


def test_diagonal_equals_the_explicit_matrix_formula(mlp):
    x, y, models = mlp
    k, lam = 40, 0.3
    st = self_influence(models, x, y, k, lam)
    lev, q = 0.0, 0.0
    for sm in models:
        names = select_params(sm.model, "all")
        phi = project(margin_grads(sm, x, y, names, None), k, 0)
        full = phi @ torch.linalg.inv(phi.t() @ phi + lam * torch.eye(k, dtype=phi.dtype)) @ phi.t()  # n x n
        lev = lev + full.diagonal() / len(models)
        q = q + (1 - sm.logits(x).softmax(1).gather(1, y[:, None]).squeeze(1).double()) / len(models)
    assert np.allclose(st["leverage"], lev.numpy(), rtol=1e-6, atol=1e-9)
    assert np.allclose(st["score"], (lev * q).numpy(), rtol=1e-5, atol=1e-9)
    assert ((st["leverage"] >= 0) & (st["leverage"] <= 1)).all()


def test_margin_gradient_of_a_linear_head_is_analytic():
    data = make_setup21(n_train=30, n_val=5, n_test=5, noise_dim=4, num_classes=3, seed=0)
    idx = data.indices(0)
    x, y = data.x[idx], data.y[idx]
    (sm,) = train_full_models(data, "erm", TrainConfig(epochs=20, selection="last"), 1)
    g = margin_grads(sm, x, y, ["heads.linear.weight"], None).view(len(y), 3, -1)
    z = sm.logits(x)
    others = z.masked_fill(torch.nn.functional.one_hot(y, 3).bool(), float("-inf")).softmax(1)
    coef = torch.nn.functional.one_hot(y, 3).float() - others  # d margin / d z
    assert torch.allclose(g, coef[:, :, None] * x[:, None, :], atol=1e-5)


def test_projection_is_seeded_cached_and_norm_preserving():
    a, b = projection_block(300, 64, 1, 0), projection_block(300, 64, 1, 0)
    assert a is b  # cached
    assert not torch.equal(projection_block(300, 64, 2, 0), a)
    v = torch.randn(50, 300)
    ratio = project(v, 256, 0).norm(dim=1) / v.norm(dim=1).double()
    assert (ratio - 1).abs().max() < 0.25


def test_refuses_k_at_or_above_rank_without_ridge(mlp):
    x, y, models = mlp
    with pytest.raises(ConfigError, match="below the rank"):
        self_influence(models, x, y, len(y), 0.0)
    dup = torch.cat([x[:10]] * 12)  # 120 rows of rank <= 10: the kernel is singular at k = 20 < min(n, p)
    ydup = torch.cat([y[:10]] * 12)
    with pytest.raises(ConfigError, match="singular"):
        self_influence(models, dup, ydup, 20, 0.0)
    st = self_influence(models, dup, ydup, 20, 1e-3)  # a ridge makes it well posed
    assert np.isfinite(st["score"]).all()
    with pytest.raises(ConfigError, match="no parameter matches"):
        self_influence(models, x, y, 8, 0.0, params="nope")
    with pytest.raises(ConfigError, match="lambda"):
        self_influence(models, x, y, 8, -1.0)


def test_head_only_gradients(mlp):
    x, y, models = mlp
    names = select_params(models[0].model, "head")
    assert names == ["heads.linear.weight", "heads.linear.bias"]
    st = self_influence(models, x, y, 16, 0.0, params="head")
    assert st["proj_dim"] == 16 and np.isfinite(st["score"]).all()


def test_known_cases_mislabeled_high_duplicate_low():
    data, bad, dup = _designed()
    res = trak_scores(data, "erm", TrainConfig(epochs=300, lr=0.05, selection="last"), num_models=2, proj_dim=40)
    s = res.scores
    assert int(np.argmax(s)) == bad
    assert s[dup : dup + 15].max() < s[bad] / 10
    assert res.params["proj_dim"] == 40 and "margin" in res.target


def test_mat_uses_the_shifted_training_probability():
    data = make_setup21(n_train=80, n_val=10, n_test=10, noise_dim=100, seed=0)
    res = trak_scores(data, "mat", TrainConfig(epochs=200, selection="last"), num_models=2, proj_dim=20)
    idx = data.indices(0)
    models = train_full_models(data, "mat", TrainConfig(epochs=200, selection="last"), 2)
    x, y = data.x[idx], data.y[idx]
    q = np.mean([1 - (m.logits(x) + m.shift).softmax(1).gather(1, y[:, None]).squeeze(1).numpy() for m in models], 0)
    assert np.allclose(res.extra["q"], q, atol=1e-6)
    assert not np.allclose(res.extra["q"], 1 - res.p_true, atol=1e-2)


@pytest.mark.skipif(not traker_available(), reason="optional package traker not installed")
def test_traker_agrees_with_native_trak():
    data = make_setup21(n_train=300, n_val=10, n_test=10, noise_dim=200, seed=0)
    idx = data.indices(0)
    x, y = data.x[idx], data.y[idx]
    models = train_full_models(data, "erm", MLP_CFG, 2, {"hidden": (32,), "bias": True})
    native = self_influence(models, x, y, 150)["score"]
    ref = traker_self_influence(models, x, y, 150)  # its own (Rademacher, per-model) projection: not equal
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(native), rank(ref))[0, 1] > 0.97
    with pytest.raises(ConfigError, match="proj_dim"):
        traker_self_influence(models, x, y, 2048)  # traker's default on a small model: refused
