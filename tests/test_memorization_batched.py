"""The memorization audit's K models, trained at once by the engine's batched mode, reproduce ``fit`` model for model
(each on its own subset of the training split)."""

import dataclasses

import pytest
import torch

from memaware.data import make_setup21
from memaware.engine import TrainConfig, fit
from memaware.errors import ConfigError
from memaware.memorization.batched import train_subset_models
from memaware.memorization.subsample import _subset

CFG = TrainConfig(epochs=120, lr=1e-2, selection="last")


@pytest.fixture(scope="module")
def tiny():
    return make_setup21(n_train=120, n_val=20, n_test=20, noise_dim=150, seed=3)


def _train_x(data):
    return data.x[data.indices(0)]


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


@pytest.mark.parametrize("method", ["erm", "mat", "xrm"])
def test_each_batched_model_equals_fit_on_its_subset(tiny, method):
    x = _train_x(tiny)
    masks = torch.rand(3, len(x), generator=torch.Generator().manual_seed(0)) < 0.5  # subsets of different sizes
    models = train_subset_models(tiny, method, masks, CFG, [7, 8, 9])
    for k in range(3):
        res = fit(_subset(tiny, masks[k]), method, dataclasses.replace(CFG, seed=7 + k))
        assert _max_diff(res.model, models[k].model) < 1e-5
        assert torch.allclose(res.predict_logits(x), models[k].predict_logits(x), atol=1e-4)


@pytest.mark.parametrize("method", ["mat", "xrm"])
def test_float64_subset_models_equal_fit_to_1e9(tiny, method):
    data = dataclasses.replace(tiny, x=tiny.x.double())
    masks = torch.rand(2, len(_train_x(data)), generator=torch.Generator().manual_seed(1)) < 0.6
    cfg = dataclasses.replace(CFG, epochs=60, optimizer="adam", lr=1e-2)
    models = train_subset_models(data, method, masks, cfg, [0, 1], {"bias": True})
    for k in range(2):
        res = fit(_subset(data, masks[k]), method, dataclasses.replace(cfg, seed=k), model_kwargs={"bias": True})
        assert _max_diff(res.model, models[k].model) <= 1e-9
        if method == "xrm":  # its held-out logits and flips, as the audit's MAT reads them
            assert torch.allclose(res.outputs["heldout_logits"], models[k].outputs["heldout_logits"], atol=1e-6)
            assert res.outputs["flipped_fraction"] == models[k].outputs["flipped_fraction"]
        else:
            assert torch.allclose(res.method.shift, models[k].method.shift, atol=1e-6)


def test_bias_and_three_classes_match_fit():
    data = make_setup21(n_train=90, n_val=10, n_test=10, noise_dim=40, num_classes=3, seed=1)
    (model,) = train_subset_models(data, "erm", None, CFG, [4], {"bias": True})
    res = fit(data, "erm", dataclasses.replace(CFG, seed=4), model_kwargs={"bias": True})
    assert _max_diff(res.model, model.model) < 1e-5


def test_held_out_examples_do_not_touch_the_model(tiny):
    """A model never sees the labels of examples outside its mask: changing them changes nothing."""
    x = _train_x(tiny)
    masks = torch.zeros(2, len(x), dtype=torch.bool)
    masks[0, :60], masks[1, 60:] = True, True
    train = tiny.indices(0)
    y2 = tiny.y.clone()
    y2[train[60:]] = 1 - y2[train[60:]]
    flipped = dataclasses.replace(tiny, y=y2)
    for method in ("erm", "mat"):
        a = train_subset_models(tiny, method, masks, CFG, [0, 1])
        b = train_subset_models(flipped, method, masks, CFG, [0, 1])
        assert _max_diff(a[0].model, b[0].model) == 0.0
        assert _max_diff(a[1].model, b[1].model) > 1e-3


def test_stacked_mlp_equals_fit(tiny):
    """Any network (here an MLP through vmap), ERM and two-phase MAT."""
    cfg = TrainConfig(epochs=60, lr=1e-2, optimizer="adam", selection="last")
    mk = {"hidden": (8,), "bias": True}
    masks = torch.ones(2, len(_train_x(tiny)), dtype=torch.bool)
    masks[1, ::3] = False
    for method in ("erm", "mat"):
        models = train_subset_models(tiny, method, masks, cfg, [5, 6], mk)
        res = fit(_subset(tiny, masks[1]), method, dataclasses.replace(cfg, seed=6), model_kwargs=mk)
        assert _max_diff(res.model, models[1].model) < 1e-5


def test_bad_masks(tiny):
    n = len(_train_x(tiny))
    with pytest.raises(ConfigError, match="masks must have shape"):
        train_subset_models(tiny, "erm", torch.ones(2, n + 1, dtype=torch.bool), CFG, [0, 1])
    with pytest.raises(ConfigError, match="at least one held-in example"):
        train_subset_models(tiny, "erm", torch.zeros(1, n, dtype=torch.bool), CFG, [0])
