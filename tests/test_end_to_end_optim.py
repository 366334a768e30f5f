"""End-to-end runs (a model factory: a backbone trains) use torch.optim with decay groups and a schedule through
the one loop: weight decay reaches weights, never biases or normalisation layers, at the scheduled rate."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from memaware import TrainConfig, fit, make_setup21
from memaware.engine.torch_optim import schedule_factor
from memaware.errors import ConfigError
from memaware.models import MultiHeadNet


class Probe(nn.Module):
    """A linear model plus parameters the loss does not depend on: only weight decay moves them."""

    def __init__(self, dim: int, num_classes: int, num_heads: int):
        super().__init__()
        self.net = MultiHeadNet(dim, num_classes, num_heads, hidden=(8,), bias=True)
        self.backbone, self.heads = self.net.backbone, self.net.heads
        self.idle = nn.Linear(3, 3)  # weight decayed, bias not
        self.norm = nn.LayerNorm(3)  # neither
        with torch.no_grad():
            self.idle.weight.fill_(1.0)
            self.idle.bias.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a zero gradient, not none: torch's optimisers skip parameters without one altogether
        idle = sum(p.sum() for p in (*self.idle.parameters(), *self.norm.parameters()))
        return self.net(x) + 0.0 * idle


@pytest.mark.parametrize("schedule,warmup", [("constant", 0.0), ("linear", 0.25), ("xrm", 0.0)])
def test_decay_groups_and_schedule_reach_the_loop(schedule, warmup):
    data = make_setup21(n_train=200, n_val=50, n_test=50, noise_dim=10, seed=0)
    lr, wd, epochs, bs = 0.1, 0.5, 3, 50
    cfg = TrainConfig(epochs=epochs, lr=lr, optimizer="adamw", weight_decay=wd, batch_size=bs, seed=0,
                      schedule=schedule, warmup_fraction=warmup, selection="last")  # fmt: skip
    res = fit(data, "erm", cfg, model_factory=lambda heads: Probe(data.dim, data.num_classes, heads))
    total = epochs * (200 // bs)
    warm = int(warmup * total + 1e-9)
    # AdamW's decoupled decay with a zero gradient: w <- w (1 - lr_t wd), lr_t = lr f(t)
    expected = math.prod(1 - lr * schedule_factor(schedule, t, total, warm) * wd for t in range(total))
    model = res.model
    assert torch.allclose(model.idle.weight, torch.full((3, 3), expected), atol=1e-6)
    assert torch.equal(model.idle.bias, torch.ones(3))
    assert torch.equal(model.norm.weight, torch.ones(3)) and torch.equal(model.norm.bias, torch.zeros(3))


def test_authors_decay_rule_is_the_inverse():
    data = make_setup21(n_train=100, n_val=50, n_test=50, noise_dim=10, seed=0)
    cfg = TrainConfig(epochs=1, lr=0.1, optimizer="adamw", weight_decay=0.5, batch_size=50, decay_rule="authors",
                      selection="last")  # fmt: skip
    model = fit(data, "erm", cfg, model_factory=lambda heads: Probe(data.dim, data.num_classes, heads)).model
    assert torch.equal(model.idle.weight, torch.ones(3, 3))  # the authors decay biases and LayerNorm weights only
    assert torch.allclose(model.idle.bias, torch.full((3,), 0.95**2))


def test_schedule_settings_are_checked():
    with pytest.raises(ConfigError, match="takes no warm-up"):
        TrainConfig(schedule="constant", warmup_fraction=0.1)
    with pytest.raises(ConfigError, match="schedule must be one of"):
        TrainConfig(schedule="step")
    with pytest.raises(ConfigError, match="decay_rule"):
        TrainConfig(decay_rule="none")


def test_gradient_clipping_caps_the_step():
    """Plain SGD (no momentum, no decay): one full-batch step moves the parameters by lr * min(|g|, c) in L2 norm."""
    data = make_setup21(n_train=100, n_val=50, n_test=50, noise_dim=10, seed=0)
    lr, cap = 0.5, 1e-3
    moved = {}
    for clip in (0.0, cap):
        cfg = TrainConfig(epochs=1, lr=lr, optimizer="sgd", batch_size=0, clip_grad_norm=clip, selection="last")
        start = MultiHeadNet(data.dim, data.num_classes, 1, hidden=(8,), bias=True)
        init = {k: v.clone() for k, v in start.state_dict().items()}
        model = fit(data, "erm", cfg, model_factory=lambda heads, m=start: m).model
        moved[clip] = torch.cat([(model.state_dict()[k] - v).flatten() for k, v in init.items()]).norm().item()
    assert moved[0.0] > 100 * lr * cap  # the unclipped gradient is far larger than the cap
    assert moved[cap] == pytest.approx(lr * cap, rel=1e-4)


def test_head_dropout_drops_in_training_only(tmp_path):
    from layout_fixtures import make_waterbirds

    from memaware.data.datasets import open_dataset
    from memaware.models.backbones import EndToEndNet, make_backbone, set_head_dropout

    make_waterbirds(tmp_path, n_per_split=4)
    dataset = open_dataset("waterbirds", tmp_path, image_size=16)
    backbone, dim = make_backbone("tiny-cnn", seed=0)
    net = EndToEndNet(dataset, backbone, dim, 2, seed=0)
    set_head_dropout(net, 0.5)
    rows = torch.arange(6, dtype=torch.float32)[:, None]
    net.train()
    torch.manual_seed(0)
    dropped = net.features(rows)
    assert 0 < int((dropped == 0).sum()) < dropped.numel()  # about half the features, scaled by 2 otherwise
    net.eval()
    kept = net.features(rows)
    assert torch.equal(kept, net.features(rows))  # evaluation never drops: the same features every time
    torch.testing.assert_close(dropped[dropped != 0], 2 * kept[dropped != 0])  # kept features scaled by 1 / (1 - p)
    with pytest.raises(ConfigError, match="head dropout needs a model with a dropout"):
        set_head_dropout(MultiHeadNet(3, 2), 0.1)
