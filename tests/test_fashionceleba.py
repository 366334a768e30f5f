"""FashionCelebA, the CelebA analogue in the memorization regime: its groups and their proportions, its bad options,
and the regime itself on a small draw (an L2-logistic ERM head fits every training group, the minority included,
and fails the test minority; its minority is memorized more than its class's majority)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_benchmarks import HAS_FASHION

from memaware.data import TEST, TRAIN
from memaware.data.benchmarks import build_benchmark
from memaware.data.benchmarks.common import group_counts
from memaware.data.benchmarks.fashionceleba import CELEBA_TRAIN, EVAL_GROUP_SIZES, train_group_sizes
from memaware.errors import ConfigError
from memaware.memorization.audit import group_ids, group_roles

needs_fashion = pytest.mark.skipif(not HAS_FASHION, reason="apt-get install dataset-fashion-mnist")


def same(d1, d2) -> bool:
    return all(torch.equal(getattr(d1, k), getattr(d2, k)) for k in ("x", "y", "a", "split"))


def test_train_groups_keep_celeba_proportions():
    for n in (1000, 10000, 20000):
        sizes = train_group_sizes(n)
        assert sum(sizes) == n
        share = np.array(sizes) / n
        assert np.allclose(share, np.array(CELEBA_TRAIN) / sum(CELEBA_TRAIN), atol=2e-3)
    assert train_group_sizes(10000)[3] == 85  # footwear on a bright backdrop: 0.85 %, as CelebA's blond men


def test_roles_of_a_celeba_like_class():
    # class 0 splits 52 / 48 over the attribute (both majorities); class 1 has a 6 % minority
    y = np.array([0] * 520 + [0] * 480 + [1] * 170 + [1] * 10)
    a = np.array([0] * 520 + [1] * 480 + [0] * 170 + [1] * 10)
    g, names = group_ids(y, a, 2)
    roles = {names[i]: r for i, r in group_roles(y, g).items()}
    assert roles == {"y=0,a=0": "majority", "y=0,a=1": "majority", "y=1,a=0": "majority", "y=1,a=1": "minority"}


@needs_fashion
def test_groups_splits_and_seeds():
    d = build_benchmark("fashionceleba", seed=0, n_train=2000, canvas=32)
    counts = group_counts(d)
    assert counts["train"] == list(train_group_sizes(2000))
    assert counts["val"] == counts["test"] == list(EVAL_GROUP_SIZES)
    assert d.dim == 32 * 32 and d.x.dtype == torch.float32
    train = d.x[d.split == TRAIN]
    assert torch.allclose(train.mean(0), torch.zeros(d.dim), atol=1e-4)  # standardised on training rows
    assert same(d, build_benchmark("fashionceleba", seed=0, n_train=2000, canvas=32))
    assert not same(d, build_benchmark("fashionceleba", seed=1, n_train=2000, canvas=32))


@needs_fashion
@pytest.mark.parametrize(("opts", "match"), [
    ({"canvas": 20}, "canvas must be in 28..128"), ({"garment": 7}, "garment must be 28 or 14"),
    ({"n_train": 50}, "n_train must be in 1000..20000"), ({"grain": -1.0}, "shift and grain must be >= 0"),
])  # fmt: skip
def test_bad_options_are_one_line(opts, match):
    with pytest.raises(ConfigError, match=match) as err:
        build_benchmark("fashionceleba", **opts)
    assert "\n" not in str(err.value)


@needs_fashion
def test_erm_memorizes_the_minority_and_fails_it_at_test():
    """The premise on a small draw (3,000 training images, 25 in the minority): the head ERM converges to fits
    every training group and is far worse on the test minority than on anything else."""
    from memaware.memorization.linear import fit_logistic

    d = build_benchmark("fashionceleba", seed=0, n_train=3000)
    tr, te = d.split == TRAIN, d.split == TEST
    head = fit_logistic(d.x[tr], d.y[tr], 1e-4, bias=True)

    def accuracy(mask):
        right = (head.margin(d.x[mask]) > 0).long() == d.y[mask]
        return [float(right[d.group[mask] == g].float().mean()) for g in range(4)]

    train, test = accuracy(tr), accuracy(te)
    assert min(train) == 1.0
    assert test[3] < 0.7 and min(test[:3]) > test[3] + 0.2
