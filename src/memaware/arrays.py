"""numpy where torch is optional: ``is_tensor`` / ``to_numpy`` recognise and convert a torch tensor without ever
importing torch (a tensor can only exist once torch is loaded), and ``float32_sum`` / ``float32_mean`` add float32
values in the order torch's CPU sum kernel does, so that a number computed here in numpy equals, to the last bit,
the one the same computation gave in torch (``memaware table`` rescoring runs that trained with torch).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

# Vectorized<float>::size() of torch's CPU sum kernel: 8 lanes with the AVX2, AVX512 and default kernels alike
# (checked against torch's sum for every length up to 300 and a few larger, with ATEN_CPU_CAPABILITY set to each)
SUM_LANES = 8
ILP = 4  # torch's row_sum: a row read as (-1, 4), four partial sums
LEVELS = 4  # torch's multi_row_sum: partial sums cascaded over four levels


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor; never imports torch (without torch loaded there is no tensor)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """``x`` (a torch tensor on any device, an array, a list or a number) as a numpy array, optionally cast."""
    if is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _ceil_log2(x: int) -> int:
    return 1 if x <= 2 else (x - 1).bit_length()


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """Column sums of ``rows`` (size, ...) float32 in torch's cascade: rows are added into a level-0 accumulator,
    which moves up a level every ``step`` rows (``step`` = 16 up to 2**20 rows), the levels summed at the end."""
    size = len(rows)
    power = max(4, _ceil_log2(size) // LEVELS)
    step, mask = 1 << power, (1 << power) - 1
    acc = np.zeros((LEVELS, *rows.shape[1:]), np.float32)
    i = 0
    while i + step <= size:
        for _ in range(step):
            acc[0] += rows[i]
            i += 1
        for j in range(1, LEVELS):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0
            if i & (mask << (j * power)):
                break
    while i < size:
        acc[0] += rows[i]
        i += 1
    for j in range(1, LEVELS):
        acc[0] += acc[j]
    return acc[0]


def _row_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the first axis of ``values`` (n, ...) float32 as torch's ``row_sum``: four interleaved partial sums
    of the first 4 * (n // 4) rows, the remainder added to the first, then the four added in order."""
    n = len(values)
    whole = n // ILP
    partial = _multi_row_sum(values[: whole * ILP].reshape(whole, ILP, *values.shape[1:]))
    for i in range(whole * ILP, n):
        partial[0] += values[i]
    for k in range(1, ILP):
        partial[0] += partial[k]
    return partial[0]


def float32_sum(values: Any) -> np.float32:
    """The float32 sum of ``values`` (n,) exactly as ``torch.Tensor.sum`` on the CPU adds them (one thread: n below
    torch's grain of 32768): from ``SUM_LANES`` values on, ``SUM_LANES`` lane-wise sums, then the leftover values and
    the lanes in order; below that, one ``row_sum``. numpy's own pairwise sum adds in another order."""
    x = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    n = len(x)
    if n < SUM_LANES:
        return np.float32(_row_sum(x))
    whole = n // SUM_LANES
    lanes = _row_sum(x[: whole * SUM_LANES].reshape(whole, SUM_LANES))
    total = np.float32(0)
    for v in (*x[whole * SUM_LANES :], *lanes):
        total = np.float32(total + v)
    return total


def float32_mean(values: Any) -> float:
    """``float(torch.as_tensor(values, dtype=torch.float32).mean())`` on the CPU: ``float32_sum`` divided by the
    count in float32; nan for no values."""
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    return float(float32_sum(x) / np.float32(len(x))) if len(x) else float("nan")
