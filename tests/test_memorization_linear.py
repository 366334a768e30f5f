"""Newton step, influence function and exact leave-one-out for L2-logistic heads."""

import numpy as np
import pytest
import torch

from memaware.data import GroupData, make_setup21
from memaware.engine import TrainConfig, fit
from memaware.errors import ConfigError
from memaware.memorization import fit_logistic, linear_scores, loo_margins


@pytest.fixture(scope="module")
def problem():
    data = make_setup21(n_train=200, n_val=20, n_test=20, noise_dim=60, seed=0)
    idx = data.indices(0)
    return data.x[idx], data.y[idx]


def test_exact_loo_equals_retraining_from_scratch(problem):
    x, y = problem
    wd = 1e-2
    head = fit_logistic(x, y, wd, bias=True)
    loo = loo_margins(head, x, y, "loo")
    for i in (0, 7, 31):
        keep = torch.arange(len(y)) != i
        # same total L2 (lambda = n wd / 2 is kept fixed when i leaves): wd' = wd n / (n - 1)
        scratch = fit_logistic(x[keep], y[keep], wd * len(y) / (len(y) - 1), bias=True)
        assert abs(float(scratch.margin(x[i : i + 1])) - loo["margin_loo"][i]) < 1e-6


def test_newton_step_tracks_exact_loo(problem):
    x, y = problem
    head = fit_logistic(x, y, 1e-2)
    res = {e: loo_margins(head, x, y, e)["score"] for e in ("loo", "newton", "influence")}
    assert np.corrcoef(res["newton"], res["loo"])[0, 1] >= 0.99
    assert np.corrcoef(res["influence"], res["loo"])[0, 1] < np.corrcoef(res["newton"], res["loo"])[0, 1]
    # the leverage correction 1 / (1 - w h) >= 1 only enlarges the first-order step
    assert (np.abs(res["influence"]) <= np.abs(res["newton"]) + 1e-12).all()


def test_logistic_optimum_is_where_fit_with_weight_decay_converges():
    """lambda = n wd / 2 in the margin parameter v = w_1 - w_0 is the optimum of fit's ERM with weight decay wd."""
    data = make_setup21(n_train=80, n_val=10, n_test=10, noise_dim=6, seed=2)
    idx = data.indices(0)
    res = fit(data, "erm", TrainConfig(epochs=3000, lr=0.5, weight_decay=0.1, selection="last"))
    w = res.model.heads.linear.weight.detach().double()
    head = fit_logistic(data.x[idx], data.y[idx], 0.1)
    assert torch.allclose(w[1] - w[0], head.v, atol=1e-4)


def _designed(n_dup: int = 15) -> tuple[GroupData, int, int]:
    """Gaussian classes y = [x_0 > 0] in d = 120 > n: one deep point with a flipped label (a lone mislabeled
    example) and one point copied ``n_dup`` times. Returns (data, mislabeled row, first duplicate row)."""
    g = torch.Generator().manual_seed(0)
    n, d = 80, 120
    x = torch.randn(n, d, generator=g)
    x[:, 0] = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) * (1.0 + torch.rand(n, generator=g))
    y = (x[:, 0] > 0).long()
    x[0, 0], y[0] = 2.5, 0  # deep inside class 1, labelled 0
    x = torch.cat([x, x[1:2].repeat(n_dup, 1)])
    y = torch.cat([y, y[1:2].repeat(n_dup)])
    split = torch.zeros(len(y), dtype=torch.int8)
    data = GroupData.from_arrays(torch.cat([x, x[:4]]), torch.cat([y, y[:4]]),
                                 torch.cat([split, torch.tensor([1, 1, 2, 2], dtype=torch.int8)]))
    return data, 0, n


@pytest.mark.parametrize("estimator", ["newton", "loo"])
def test_known_cases_mislabeled_high_duplicate_near_zero(estimator):
    data, bad, dup = _designed()
    s = linear_scores(data, "erm", estimator, TrainConfig(weight_decay=1e-3, selection="last")).scores
    assert int(np.argmax(s)) == bad and s[bad] > 0.5
    assert np.abs(s[dup : dup + 15]).max() < 0.02
    assert np.median(s) < s[bad] / 5


def test_bad_input(problem):
    x, y = problem
    with pytest.raises(ConfigError, match="weight decay > 0"):
        fit_logistic(x, y, 0.0)
    with pytest.raises(ConfigError, match="binary"):
        fit_logistic(x, y + (y == 1).long(), 1e-2)
    with pytest.raises(ConfigError, match="estimator must be"):
        loo_margins(fit_logistic(x, y, 1e-2), x, y, "bogus")
    data = make_setup21(n_train=30, n_val=5, n_test=5, noise_dim=5, seed=0)
    with pytest.raises(ConfigError, match="linear heads"):
        linear_scores(data, "erm", "newton", TrainConfig(weight_decay=1e-2, selection="last"), {"hidden": (4,)})
    with pytest.raises(ConfigError, match="selection='last'"):
        linear_scores(data, "erm", "newton", TrainConfig(weight_decay=1e-2))
