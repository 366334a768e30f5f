"""subsample: balanced design, held-in minus held-out statistics, known cases, reliability."""

import numpy as np
import pytest
import torch
from test_memorization_linear import _designed

from memaware.data import make_setup21
from memaware.engine import TrainConfig
from memaware.errors import ConfigError
from memaware.memorization import split_half_reliability, subsample_probs, subsample_scores
from memaware.memorization.subsample import balanced_design, held_in_minus_out


def test_balanced_design_holds_each_example_in_exactly_half_the_time():
    masks = balanced_design(31, 12, torch.Generator().manual_seed(0))
    assert masks.shape == (12, 31)
    assert (masks.sum(0) == 6).all()
    assert (masks[0::2] ^ masks[1::2]).all()  # complementary pairs
    assert set(masks.sum(1).tolist()) == {15, 16}
    for k in (0, 3, -2):
        with pytest.raises(ConfigError, match="even number"):
            balanced_design(10, k, torch.Generator())


def test_held_in_minus_out_statistics():
    probs = torch.tensor([[0.9, 0.2], [0.5, 0.4], [0.7, 0.6], [0.1, 0.8]])
    masks = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)
    st = held_in_minus_out(probs, masks)
    assert np.allclose(st["p_in"], [0.8, 0.6]) and np.allclose(st["p_out"], [0.3, 0.4])
    assert np.allclose(st["score"], [0.5, 0.2])
    se0 = np.sqrt(np.var([0.9, 0.7], ddof=1) / 2 + np.var([0.5, 0.1], ddof=1) / 2)
    assert np.isclose(st["se"][0], se0)


def test_known_cases_mislabeled_high_duplicate_near_zero():
    data, bad, dup = _designed()
    cfg = TrainConfig(epochs=300, lr=0.05, selection="last")
    res = subsample_scores(data, "erm", cfg, num_models=16)
    s = res.scores
    assert int(np.argmax(s)) == bad and s[bad] > 0.5
    assert np.abs(s[dup : dup + 15]).max() < 0.05
    assert res.se is not None and np.isfinite(res.se).all() and res.se[bad] < s[bad] / 3
    assert "held in" in res.target or "i in S" in res.target


def test_batched_and_looped_half_models_agree():
    data = make_setup21(n_train=60, n_val=10, n_test=10, noise_dim=80, seed=0)
    cfg = TrainConfig(epochs=50, lr=1e-2, selection="last")
    for method, model_kwargs in (("erm", None), ("mat", None), ("mat", {"hidden": (3,)})):  # MLP + MAT batched too
        pb, mb = subsample_probs(data, method, cfg, 4, model_kwargs, batched=True)
        pl, ml = subsample_probs(data, method, cfg, 4, model_kwargs, batched=False)
        assert torch.equal(mb, ml)
        assert torch.allclose(pb, pl, atol=1e-4)


def test_split_half_reliability_is_high_for_a_stable_signal_and_low_for_noise():
    g = torch.Generator().manual_seed(0)
    masks = balanced_design(200, 40, g)
    signal = torch.linspace(0, 1, 200)
    noise = 0.1 * torch.randn(40, 200, generator=g)
    rel = split_half_reliability(0.5 + masks * signal * 0.4 + noise / 2, masks)
    assert rel["spearman_brown"] > 0.95 and rel["models_per_half"] == 20
    rel = split_half_reliability(0.5 + noise, masks)
    assert rel["spearman_brown"] < 0.5
    with pytest.raises(ConfigError, match="divisible by 4"):
        split_half_reliability(noise[:6], masks[:6])


def test_bad_config():
    data = make_setup21(n_train=20, n_val=5, n_test=5, noise_dim=5, seed=0)
    with pytest.raises(ConfigError, match="selection='last'"):
        subsample_scores(data, "erm", TrainConfig(epochs=5), num_models=2)
    with pytest.raises(ConfigError, match="supports methods"):
        subsample_scores(data, "xrm", TrainConfig(epochs=5, selection="last"), num_models=2)
    with pytest.raises(ConfigError, match="batched half-models train full batch"):
        subsample_probs(data, "mat", TrainConfig(epochs=5, selection="last", batch_size=4), 2, batched=True)
