"""The batched trainers of the memorization audit reproduce ``fit`` model for model."""

import dataclasses

import pytest
import torch

from memaware.data import make_setup21
from memaware.memorization.batched import train_erm_stacked, train_heads, train_xrm
from memaware.memorization.subsample import _subset
from memaware.train import TrainConfig, fit

CFG = TrainConfig(epochs=120, lr=1e-2, selection="last")


@pytest.fixture(scope="module")
def tiny():
    return make_setup21(n_train=120, n_val=20, n_test=20, noise_dim=150, seed=3)


def _train(data):
    idx = data.indices(0)
    return data.x[idx], data.y[idx]


@pytest.mark.parametrize("method", ["erm", "mat"])
def test_each_batched_model_equals_fit_on_its_subset(tiny, method):
    x, y = _train(tiny)
    masks = torch.rand(3, len(y), generator=torch.Generator().manual_seed(0)) < 0.5
    heads = train_heads(method, x, y, masks, CFG, [7, 8, 9], 2)
    for k in range(3):
        res = fit(_subset(tiny, masks[k]), method, dataclasses.replace(CFG, seed=7 + k))
        assert torch.allclose(res.model.heads.linear.weight, heads.weight[k], atol=1e-5)
        assert torch.allclose(res.predict_logits(x), heads.logits(x)[k], atol=1e-4)


def test_batched_xrm_heldout_logits_match_fit(tiny):
    x, y = _train(tiny)
    ho, flipped = train_xrm(x, y, torch.ones(1, len(y), dtype=torch.bool), CFG, [0], 2)
    res = fit(tiny, "xrm", CFG)
    assert torch.allclose(ho[0].softmax(1), res.outputs["heldout_logits"].softmax(1), atol=1e-5)
    assert abs(float(flipped[0]) - res.outputs["flipped_fraction"]) < 1e-6


def test_bias_and_three_classes_match_fit():
    data = make_setup21(n_train=90, n_val=10, n_test=10, noise_dim=40, num_classes=3, seed=1)
    x, y = _train(data)
    heads = train_heads("erm", x, y, torch.ones(1, len(y), dtype=torch.bool), CFG, [4], 3, bias=True)
    res = fit(data, "erm", dataclasses.replace(CFG, seed=4), model_kwargs={"bias": True})
    assert torch.allclose(res.model.heads.linear.bias, heads.bias[0], atol=1e-5)
    assert torch.allclose(res.model.heads.linear.weight, heads.weight[0], atol=1e-5)


def test_held_out_examples_do_not_touch_the_model(tiny):
    """A model never sees the labels of examples outside its mask: changing them changes nothing."""
    x, y = _train(tiny)
    masks = torch.zeros(2, len(y), dtype=torch.bool)
    masks[0, :60], masks[1, 60:] = True, True
    y2 = y.clone()
    y2[60:] = 1 - y2[60:]
    for method in ("erm", "mat"):
        a = train_heads(method, x, y, masks, CFG, [0, 1], 2)
        b = train_heads(method, x, y2, masks, CFG, [0, 1], 2)
        assert torch.equal(a.weight[0], b.weight[0])
        assert not torch.allclose(a.weight[1], b.weight[1])


def test_stacked_mlp_equals_fit(tiny):
    x, y = _train(tiny)
    cfg = TrainConfig(epochs=60, lr=1e-2, optimizer="adam", selection="last")
    mk = {"hidden": (8,), "bias": True}
    nets = train_erm_stacked(x, y, torch.ones(2, len(y), dtype=torch.bool), cfg, [5, 6], 2, mk)
    res = fit(tiny, "erm", dataclasses.replace(cfg, seed=6), model_kwargs=mk)
    for (_, p), (_, q) in zip(res.model.named_parameters(), nets[1].named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)
