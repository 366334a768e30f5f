"""memaware.engine.torch_optim: weight-decay groups, torch.optim optimisers and warm-up schedules for fine-tuning."""

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from memaware.engine.torch_optim import SCHEDULES, decay_groups, make_schedule, make_torch_optimizer, warmup_steps_for
from memaware.errors import ConfigError
from memaware.models.backbones import EndToEndNet, make_backbone


class BertLayerNorm(nn.Module):
    """Old Hugging Face style LayerNorm: its own class, parameters named gamma / beta."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.pos = nn.Parameter(torch.zeros(5, 4))  # bare parameter: decayed
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.bert_ln = BertLayerNorm(4)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.out = nn.Linear(4, 2, bias=False)


def named_split(model: nn.Module, groups: list[dict]) -> tuple[set[str], set[str]]:
    """(decayed names, undecayed names), checking every trainable parameter is in exactly one group."""
    names = {id(p): n for n, p in model.named_parameters()}
    placed = [id(p) for g in groups for p in g["params"]]
    assert len(placed) == len(set(placed))
    assert set(placed) == {id(p) for p in model.parameters() if p.requires_grad}
    decay = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    return decay, {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}


def test_decay_groups_small_model():
    model = Small()
    groups = decay_groups(model, 0.01)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    decay, no_decay = named_split(model, groups)
    assert decay == {"pos", "emb.weight", "fc.weight", "out.weight"}
    assert no_decay == {"fc.bias", "ln.weight", "ln.bias", "bn.weight", "bn.bias", "bert_ln.gamma", "bert_ln.beta"}


def test_decay_groups_transformer_layer_and_tied_weights():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    decay, no_decay = named_split(layer, decay_groups(layer, 0.1))
    assert decay == {"self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"}
    assert {"self_attn.in_proj_bias", "norm1.weight", "norm2.bias", "linear1.bias"} <= no_decay
    tied = nn.Sequential(nn.Embedding(6, 3), nn.Linear(3, 6, bias=False))
    tied[1].weight = tied[0].weight
    (group,) = decay_groups(tied, 0.1)
    assert len(group["params"]) == 1
    assert decay_groups(nn.LayerNorm(3), 0.1)[0]["weight_decay"] == 0.0  # no empty decayed group


@pytest.mark.parametrize("backbone", ["tiny-cnn", "tiny-text"])
def test_decay_groups_end_to_end_net(backbone):
    net, dim = make_backbone(backbone, seed=0)
    model = EndToEndNet(None, net, dim, num_classes=3, num_heads=2, bias=True, seed=0)
    decay, no_decay = named_split(model, decay_groups(model, 1e-4))
    assert no_decay == {n for n, _ in model.named_parameters() if n.endswith("bias")}
    assert "heads.linear.weight" in decay and "heads.linear.bias" in no_decay
    assert ("backbone.bag.weight" if backbone == "tiny-text" else "backbone.net.0.weight") in decay
    model.backbone.requires_grad_(False)  # heads only: the frozen backbone is left out
    assert {id(p) for g in decay_groups(model, 1e-4) for p in g["params"]} == {id(p) for p in model.heads.parameters()}


def one_linear(w: list[float], b: float, g: list[float], gb: float) -> nn.Linear:
    lin = nn.Linear(len(w), 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w]))
        lin.bias.fill_(b)
    lin.weight.grad, lin.bias.grad = torch.tensor([g], dtype=torch.float64), torch.tensor([gb], dtype=torch.float64)
    return lin


def test_adamw_one_step_matches_hand_computation():
    w, b, g, gb, lr, wd, eps = [0.5, -2.0], 1.5, [0.3, -0.1], 0.2, 0.1, 0.5, 1e-8
    lin = one_linear(w, b, g, gb)
    opt = make_torch_optimizer("adamw", lin, lr, weight_decay=wd)
    assert isinstance(opt, torch.optim.AdamW)
    opt.step()
    # step 1: m_hat = g, v_hat = g^2, so the Adam step is g / (|g| + eps); decay is decoupled: p * (1 - lr * wd)
    want_w = [p * (1 - lr * wd) - lr * x / (abs(x) + eps) for p, x in zip(w, g, strict=True)]
    torch.testing.assert_close(lin.weight.detach(), torch.tensor([want_w], dtype=torch.float64))
    torch.testing.assert_close(lin.bias.detach(), torch.tensor([b - lr * gb / (abs(gb) + eps)], dtype=torch.float64))


def test_sgd_two_steps_match_hand_computation():
    w, b, g, gb, lr, mom, wd = [0.5, -2.0], 1.5, [0.3, -0.1], 0.2, 0.1, 0.9, 0.5
    lin = one_linear(w, b, g, gb)
    opt = make_torch_optimizer("sgd", lin, lr, momentum=mom, weight_decay=wd)
    opt.step()
    opt.step()  # same gradients: buf_2 = mom * d_1 + d_2, coupled L2 on the weight only
    d1 = [x + wd * p for p, x in zip(w, g, strict=True)]
    p1 = [p - lr * d for p, d in zip(w, d1, strict=True)]
    p2 = [p - lr * (mom * a + x + wd * p) for p, a, x in zip(p1, d1, g, strict=True)]
    torch.testing.assert_close(lin.weight.detach(), torch.tensor([p2], dtype=torch.float64))
    torch.testing.assert_close(
        lin.bias.detach(), torch.tensor([b - lr * gb - lr * (mom * gb + gb)], dtype=torch.float64)
    )
    assert isinstance(make_torch_optimizer("adam", lin, lr), torch.optim.Adam)


def run_schedule(kind: str, total: int, warmup: int, lr: float = 0.2) -> list[float]:
    """Learning rates used at optimiser steps 0..total (the same in both groups)."""
    opt = make_torch_optimizer("adamw", nn.Linear(2, 2), lr, weight_decay=0.01)
    sched = make_schedule(opt, kind, total, warmup)
    lrs = []
    for _ in range(total + 1):
        (decayed, undecayed) = (g["lr"] for g in opt.param_groups)
        assert decayed == undecayed
        lrs.append(decayed)
        opt.step()
        sched.step()
    return lrs


def test_linear_schedule_follows_the_bert_rule():
    lr, total, warmup = 0.2, 100, 10
    lrs = run_schedule("linear", total, warmup, lr)
    # Hugging Face's get_linear_schedule_with_warmup lambda
    hf = [t / warmup if t < warmup else max(0.0, (total - t) / (total - warmup)) for t in range(total + 1)]
    assert lrs == pytest.approx([lr * f for f in hf])
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(lr / 2) and lrs[warmup] == pytest.approx(lr)
    assert lrs[55] == pytest.approx(lr * 45 / 90) and lrs[total] == 0.0
    assert run_schedule("linear", 4, 0, 1.0) == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    assert run_schedule("linear", 2, 2, 1.0) == pytest.approx([0, 0.5, 0])


def test_cosine_schedule_and_constant():
    lrs = run_schedule("cosine", 30, 10, 1.0)
    assert lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.5) and lrs[25] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert lrs[30] == pytest.approx(0.0, abs=1e-12)
    assert make_schedule(make_torch_optimizer("sgd", nn.Linear(2, 2), 0.1), "constant", 10) is None
    assert SCHEDULES == ("constant", "linear", "cosine", "xrm")


def test_the_authors_xrm_schedule():
    # facebookresearch/XRM networks.py: w = T // 3 + 1; 1 - t / w, then 1 - (t - w) / T
    lrs = run_schedule("xrm", 9, 0, 1.0)  # w = 4
    assert lrs[:4] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert lrs[4:] == pytest.approx([1.0, 1 - 1 / 9, 1 - 2 / 9, 1 - 3 / 9, 1 - 4 / 9, 1 - 5 / 9])
    with pytest.raises(ConfigError, match="takes no warm-up"):
        make_schedule(make_torch_optimizer("sgd", nn.Linear(2, 2), 0.1), "xrm", 10, 2)


def test_schedule_and_optimizer_resume_from_state_dicts():
    def build():
        model = nn.Linear(3, 1)
        opt = make_torch_optimizer("adamw", model, 0.1, weight_decay=0.1)
        return model, opt, make_schedule(opt, "linear", 10, 2)

    model, opt, sched = build()
    model(torch.ones(1, 3)).sum().backward()
    for _ in range(3):
        opt.step()
        sched.step()
    model2, opt2, sched2 = build()
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.state_dict()["state"][0]["step"] == 3
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([0.1 * 7 / 8] * 2)
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * 6 / 8)


def test_warmup_steps_for():
    assert warmup_steps_for(0.1, 1000) == 100
    assert warmup_steps_for(0.29, 100) == 29  # 0.29 * 100 = 28.999... in floating point
    assert warmup_steps_for(0.1, 30) == 3 and warmup_steps_for(0.1, 5) == 0
    assert warmup_steps_for(0.0, 10) == 0 and warmup_steps_for(1.0, 7) == 7


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: make_torch_optimizer("lamb", nn.Linear(2, 2), 0.1), "'lamb'"),
        (lambda: make_torch_optimizer("sgd", nn.Linear(2, 2), 0.0), "got 0.0"),
        (lambda: make_torch_optimizer("sgd", nn.Linear(2, 2), 0.1, momentum=1.0), "got 1.0"),
        (lambda: make_torch_optimizer("adamw", nn.Linear(2, 2), 0.1, weight_decay=-1.0), "got -1.0"),
        (lambda: make_torch_optimizer("adamw", nn.Linear(2, 2).requires_grad_(False), 0.1), "no trainable parameters"),
        (lambda: make_schedule(None, "step", 10), "'step'"),
        (lambda: make_schedule(None, "linear", 0), "got 0"),
        (lambda: make_schedule(None, "linear", 10, -1), "got -1"),
        (lambda: make_schedule(None, "cosine", 10, 11), "warmup_steps (11) exceeds total_steps (10)"),
        (lambda: make_schedule(None, "constant", 10, 3), "warmup_steps=3"),
        (lambda: warmup_steps_for(1.5, 10), "got 1.5"),
        (lambda: warmup_steps_for(0.1, -2), "got -2"),
    ],
)
def test_errors_are_one_line_config_errors(call, needle):
    with pytest.raises(ConfigError) as info:
        call()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_import_does_not_load_dynamo():
    code = "import sys, memaware.engine.torch_optim; assert 'torch._dynamo' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
