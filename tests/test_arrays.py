"""memaware.arrays: torch tensors recognised without importing torch, and float32 sums in torch's CPU order (the
numpy scoring of ``memaware table`` must give the floats the torch code gave)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from memaware.arrays import SUM_LANES, float32_mean, float32_sum, is_tensor, to_numpy


def test_is_tensor_and_to_numpy():
    t = torch.arange(4, requires_grad=False)
    assert is_tensor(t) and not is_tensor(t.numpy()) and not is_tensor([1, 2])
    assert to_numpy(t.float().requires_grad_()).dtype == np.float32
    assert to_numpy([1, 2], np.int64).dtype == np.int64 and to_numpy(t, np.int16).dtype == np.int16
    probe = (
        "import sys, numpy; from memaware.arrays import is_tensor; "
        "print(is_tensor(numpy.zeros(2)), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # asking never imports torch


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e-3])
def test_float32_sum_and_mean_equal_torch_to_the_bit(scale):
    rng = np.random.default_rng(int(scale * 1000) % 97)
    lengths = [*range(0, 3 * SUM_LANES * 4 + 3), 127, 128, 129, 511, 513, 1000, 4099, 20000]
    for n in lengths:
        x = (rng.random(n) * scale * rng.choice([1.0, 7.0, 1e-2], n)).astype(np.float32)
        t = torch.from_numpy(x)
        assert float(float32_sum(x)) == float(t.sum()), n
        if n:
            assert float32_mean(x) == float(t.mean()), n
    assert np.isnan(float32_mean([]))
