import math

import torch

from memaware.metrics import (
    group_report,
    majority_minority_acc,
    report_from_counts,
    worst_class_acc,
    worst_group_acc,
)


def test_group_report_hand_made():
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    a = torch.tensor([0, 0, 1, 1, 1, 0])
    pred = torch.tensor([0, 0, 1, 1, 1, 1])  # wrong on (y=0,a=1)
    r = group_report(pred, y, a, num_classes=2, num_attrs=2)
    assert abs(r["avg_acc"] - 5 / 6) < 1e-6
    assert r["groups"] == {
        "y=0,a=0": {"n": 2, "acc": 1.0},
        "y=0,a=1": {"n": 1, "acc": 0.0},
        "y=1,a=0": {"n": 1, "acc": 1.0},
        "y=1,a=1": {"n": 2, "acc": 1.0},
    }
    assert r["worst_group_acc"] == 0.0
    assert abs(r["worst_class_acc"] - 2 / 3) < 1e-6


def test_worst_group_ignores_absent_and_unknown():
    correct = torch.tensor([True, False, True, True])
    group = torch.tensor([0, 0, 3, -1])
    assert worst_group_acc(correct, group, 4) == 0.5  # groups 1, 2 are absent, -1 unknown
    assert math.isnan(worst_group_acc(correct, torch.full((4,), -1), 4))
    assert worst_class_acc(correct, torch.tensor([0, 0, 1, 1]), 2) == 0.5


def test_majority_minority():
    y = torch.tensor([0, 1, 0, 1, 1])
    a = torch.tensor([0, 1, 1, 0, -1])
    correct = torch.tensor([True, False, True, False, True])
    assert majority_minority_acc(correct, y, a) == (0.5, 0.5)


def _counts(pred, y, a, num_classes, num_attrs):
    """The counts an evaluation log keeps for a split, computed independently of memaware.evallog."""
    correct = (pred == y).long()
    G = num_classes * num_attrs
    known = a >= 0
    g = y[known] * num_attrs + a[known]
    return {
        "group_hits": torch.bincount(g, weights=correct[known].double(), minlength=G).long(),
        "group_counts": torch.bincount(g, minlength=G),
        "class_hits": torch.bincount(y, weights=correct.double(), minlength=num_classes).long(),
        "class_counts": torch.bincount(y, minlength=num_classes),
        "hits": int(correct.sum()),
        "n": len(y),
        "num_attrs": num_attrs,
    }


def test_report_from_counts_equals_group_report_to_the_bit():
    gen = torch.Generator().manual_seed(0)
    cases = 0
    for trial in range(60):
        K, A = 2 + trial % 3, 1 + trial % 4
        n = int(torch.randint(1, 3000, (1,), generator=gen))
        y = torch.randint(0, K, (n,), generator=gen)
        a = torch.randint(-1, A, (n,), generator=gen)  # -1: unknown attribute
        if trial % 5 == 0:
            a[(y == 0) & (a >= 0)] = A - 1  # groups y=0,a<A-1 absent
        if trial % 7 == 0:
            a[:] = -1  # no known attribute: worst-group nan
        p_right = float(torch.rand(1, generator=gen))
        pred = torch.where(torch.rand(n, generator=gen) < p_right, y, torch.randint(0, K, (n,), generator=gen))
        expected = group_report(pred, y, a, K, A)
        got = report_from_counts(**_counts(pred, y, a, K, A))
        if math.isnan(expected["worst_group_acc"]):
            assert math.isnan(got.pop("worst_group_acc")) and expected.pop("worst_group_acc") is not None
        assert got == expected  # exact float equality, group names and counts included
        cases += 1
    assert cases == 60
