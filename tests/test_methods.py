import math

import pytest
import torch
import torch.nn.functional as F

from memaware.engine.optim import SGD, Adam
from memaware.errors import ConfigError
from memaware.methods import make_method
from memaware.methods.mat import label_given_heldout, mat_log_shift
from memaware.methods.xrm import class_balanced_ce, cross_mistake_groups, flip_labels, flip_probability


def test_mat_shift_hand_computed():
    # temperature 1, two classes; held-out logits log(p) so that p(yho | x) is known exactly
    p = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    y = torch.tensor([0, 1, 1])
    # p(yho, y) = (1/3) sum_i p(yho | x_i) [y_i = y]:
    #   yho=0: y=0 -> 0.8/3, y=1 -> (0.6 + 0.1)/3 ; yho=1: y=0 -> 0.2/3, y=1 -> (0.4 + 0.9)/3
    cond = torch.tensor([[0.8 / 1.5, 0.7 / 1.5], [0.2 / 1.5, 1.3 / 1.5]])
    assert torch.allclose(label_given_heldout(p, y, 2), cond, atol=1e-6)
    expected = torch.log(p @ cond + 1e-6)
    # row 0: p_ho(y=0 | x_0) = 0.8 * 0.8/1.5 + 0.2 * 0.2/1.5 = 0.68/1.5
    assert expected[0, 0].item() == pytest.approx(math.log(0.68 / 1.5 + 1e-6), abs=1e-6)
    assert torch.allclose(mat_log_shift(p.log(), y, temperature=1.0), expected, atol=1e-6)
    # a low temperature sharpens p(yho | x) to the argmax
    sharp = mat_log_shift(p.log(), y, temperature=1e-3)
    hard = F.one_hot(p.argmax(1), 2).float()
    cond_hard = label_given_heldout(hard, y, 2)
    assert torch.allclose(sharp, torch.log(hard @ cond_hard + 1e-6), atol=1e-5)
    # rows selects without changing p(y | yho), which uses all examples
    assert torch.allclose(mat_log_shift(p.log(), y, 1.0, rows=torch.tensor([2])), expected[2:], atol=1e-6)


def test_mat_shift_unpredicted_class_has_no_nan():
    h = torch.tensor([[10.0, -10.0, -10.0], [9.0, -9.0, -9.0]])  # nobody predicts classes 1, 2
    s = mat_log_shift(h, torch.tensor([0, 1]), temperature=1e-3, num_classes=3)
    assert torch.isfinite(s).all()


def test_xrm_flip_probability():
    k2 = flip_probability(torch.tensor([0.5, 0.75, 1.0]), 2)
    assert torch.allclose(k2, torch.tensor([0.0, 0.5, 1.0]))
    k3 = flip_probability(torch.tensor([1 / 3, 2 / 3, 1.0]), 3)
    assert torch.allclose(k3, torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)
    # empirical flip rate matches the formula: p_ho = 0.75 (K=2) -> flips with probability 0.5
    logits = torch.tensor([[math.log(3.0), 0.0]]).repeat(20000, 1)
    labels = torch.ones(20000, dtype=torch.long)
    new = flip_labels(labels, logits, torch.Generator().manual_seed(0))
    assert (new == 0).float().mean().item() == pytest.approx(0.5, abs=0.015)
    # a label already equal to the held-out argmax never changes
    assert torch.equal(
        flip_labels(torch.zeros(5, dtype=torch.long), logits[:5], torch.Generator()),
        torch.zeros(5, dtype=torch.long),
    )


def test_class_balanced_ce_weights_classes_equally():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 0, 1])
    ce = F.cross_entropy(logits, y, reduction="none")
    assert class_balanced_ce(logits, y, 2).item() == pytest.approx(ce[:3].mean().item() + ce[3].item())
    # a class absent from the batch contributes nothing
    assert class_balanced_ce(logits[:3], y[:3], 2).item() == pytest.approx(ce[:3].mean().item())


def test_cross_mistake_groups():
    logits = torch.tensor([[[2.0, 0.0], [2.0, 0.0]], [[2.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [0.0, 2.0]]])
    y = torch.tensor([0, 0, 0])
    assert cross_mistake_groups(logits, y).tolist() == [0, 1, 1]
    assert cross_mistake_groups(logits, torch.tensor([1, 1, 1])).tolist() == [3, 3, 2]


def test_mat_rejects_bad_hparams():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        make_method("mat", temperature=0.0)
    with pytest.raises(ConfigError, match="mode must be one of"):
        make_method("mat", mode="three-phase")
    with pytest.raises(ConfigError, match="unknown method 'foo'"):
        make_method("foo")


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (
            lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
        ),
        (
            lambda p: Adam(p, lr=0.01, weight_decay=0.01),
            lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
        ),
        (
            lambda p: Adam(p, lr=0.01, weight_decay=0.1, decoupled=True),
            lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
        ),
    ],
)
def test_optimisers_match_torch(ours, theirs):
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    w1 = torch.randn(3, 5, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    o1, o2 = ours([w1]), theirs([w2])
    for _ in range(25):
        for w, o in ((w1, o1), (w2, o2)):
            o.zero_grad()
            F.cross_entropy(x @ w.t(), y).backward()
            o.step()
    assert torch.allclose(w1, w2, atol=1e-6)
