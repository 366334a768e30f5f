"""One training run from the command line's point of view (``memaware train``): a fresh run clears what an earlier
run left in its directory, a resumed one continues from its checkpoint; the run itself is
``memaware.sweep.runner``'s."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..sweep.runner import checkpoints, execute


def run_training(spec: dict[str, Any], out: str | Path, resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Trains the run ``spec`` (``runner.SPEC_KEYS``) in ``out`` and returns its results dict. Without ``resume``,
    stale checkpoints and results.json of an earlier run in ``out`` are removed first, so they cannot leak in; with
    it, training continues from the checkpoint and an earlier results.json is kept as results.previous.json."""
    out = Path(out)
    if not resume:
        for path in (*checkpoints(out), out / "results.json"):
            path.unlink(missing_ok=True)
    elif (out / "results.json").exists():
        shutil.move(out / "results.json", out / "results.previous.json")
    return execute(spec, out, progress=progress)


__all__ = ["run_training"]
