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


def test_numpy_and_torch_give_the_same_numbers():
    """Every function computes in numpy for arrays (memaware table, without torch) and in torch for tensors: the
    same floats, to the bit, and hit_counts the same counts."""
    import numpy as np

    from memaware.metrics import group_correct, hit_counts

    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        K, A, n = 2 + trial % 3, 1 + trial % 3, int(torch.randint(1, 2000, (1,), generator=gen))
        y, a = torch.randint(0, K, (n,), generator=gen), torch.randint(-1, A, (n,), generator=gen)
        pred = torch.where(torch.rand(n, generator=gen) < 0.7, y, torch.randint(0, K, (n,), generator=gen))
        arrays = [v.numpy() for v in (pred, y, a)]
        assert group_report(*arrays, K, A) == group_report(pred, y, a, K, A)
        assert group_report(pred, *arrays[1:], K, A) == group_report(pred, y, a, K, A)  # mixed: numpy
        correct = pred == y
        mm_np, mm_t = majority_minority_acc(correct.numpy(), y.numpy(), a.numpy()), majority_minority_acc(correct, y, a)
        assert np.array_equal(mm_np, mm_t, equal_nan=True)
        hits, counts = group_correct(correct.numpy(), y.numpy(), K)
        assert isinstance(hits, np.ndarray) and hits.dtype == np.float32
        assert np.array_equal(hits, group_correct(correct, y, K)[0].numpy())
        g = torch.where(a >= 0, y * A + a, -1)
        preds = torch.stack([pred, y, torch.zeros_like(y)])
        by_numpy = hit_counts(preds.numpy(), y.numpy(), g.numpy(), K * A, K)
        by_torch = hit_counts(preds, y.numpy(), g.numpy(), K * A, K)
        for u, v in zip(by_numpy, by_torch, strict=True):
            assert u.dtype == v.dtype == np.int64 and np.array_equal(u, v)
        assert by_numpy[2].tolist() == [int(correct.sum()), n, int((y == 0).sum())]
