"""Comparison helpers shared by the batched-mode tests."""

from __future__ import annotations

import pytest


def assert_close(a, b) -> None:
    """Equal, floats within 1e-12 (float64 state such as GroupDRO's q)."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_close(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close(x, y)
    else:
        assert a == b
