import math

import torch

from memaware.metrics import group_report, majority_minority_acc, worst_class_acc, worst_group_acc


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
