"""Every matplotlib figure, one module per figure family: ``fig1`` (paper Fig. 1), ``fig3`` (Fig. 3 and its sigma
sweep), ``memorization`` (Fig. 2), ``theorem`` (the Theorem 2.2 phase diagram), ``table`` (the Table 1 bar chart).

Matplotlib is imported lazily, with the Agg backend, through ``pyplot()``, so that importing a figure module (and
starting the ``memaware`` command) stays fast; ``save(fig, path)`` writes a PNG atomically and closes the figure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | os.PathLike) -> Path:
    """Writes ``fig`` as a PNG at ``path`` (atomically) and closes it; returns the path."""
    from ..artifacts import save_figure

    try:
        return save_figure(fig, path)
    finally:
        pyplot().close(fig)


__all__ = ["pyplot", "save"]
