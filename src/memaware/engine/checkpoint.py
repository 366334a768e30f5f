"""Checkpoint/resume of one run (``engine.fitting``): the whole training state written atomically when due, and a
run started on an existing checkpoint continuing from it with the numbers of an uninterrupted one."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..artifacts import atomic_writer
from ..data.groups import TRAIN, GroupData
from ..errors import ConfigError
from ..methods import Method
from .config import TrainConfig

if TYPE_CHECKING:
    from .fitting import Run


def run_signature(method: Method, cfg: TrainConfig, data: GroupData) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress", "progress_label", "device")}
    return {
        "method": method.name,
        "describe": repr(sorted(method.describe().items())),
        "config": repr(keep),
        "n": len(data),
        "n_train": int((data.split == TRAIN).sum()),
    }


class Checkpointer:
    """Writes ``path`` every ``every`` epochs and/or once ``seconds`` have passed since the last write, and when
    training ends; ``path=None`` writes nothing. ``signature`` (``run_signature``) guards a resume."""

    def __init__(self, path: Path | None, every: int | None, seconds: float | None, signature: dict[str, Any]):
        self.path, self.every, self.seconds, self.signature = path, every, seconds, signature
        self.last_save = time.monotonic()

    def restore(self, run: Run) -> tuple[int, bool, int | None]:
        """Loads an existing checkpoint into ``run``: (first epoch to run, whether training had ended, the epoch
        resumed from or None)."""
        start, done, resumed = 1, False, None
        if self.path is not None and self.path.exists():
            state = torch.load(self.path, weights_only=True, map_location="cpu")
            if state["signature"] != self.signature:
                raise ConfigError(f"checkpoint {self.path} was written by a different run; delete it to start over")
            run.model.load_state_dict(state["model"])
            opt = run.steps  # SingleRunSteps: the optimiser, schedule and Gram stepper live there
            opt.optimizer.load_state_dict(state["optimizer"])
            if opt.schedule is not None:
                opt.schedule.load_state_dict(state["schedule"])
            run.method.load_state_dict(state["method"])
            run.generator.set_state(state["generator"])
            run.selection.load_state_dict(state["selection"])
            run.history.load_state_dict(state["history"])
            if opt.dual is not None:
                opt.dual.load_state_dict(state["dual"])
            if opt.scaler is not None and state.get("scaler") is not None:
                opt.scaler.load_state_dict(state["scaler"])
            start, done, resumed = state["epoch"] + 1, state["done"], state["epoch"]
            opt.steps = state["steps"]
        self.last_save = time.monotonic()
        return start, done, resumed

    def end_of_epoch(self, epoch: int, stop: bool, run: Run) -> None:
        """Writes the checkpoint when one is due after ``epoch`` (``stop``: training ends here)."""
        due = (self.every is not None and epoch % self.every == 0) or (
            self.seconds is not None and time.monotonic() - self.last_save >= self.seconds
        )
        last = stop or epoch == run.config.epochs
        if self.path is None or not (due or last):
            return
        self.last_save = time.monotonic()
        steps = run.steps
        if steps.dual is not None:
            steps.dual.materialize()  # writes the model's weights only; the dual iterates go on unchanged
        state = {
            "signature": self.signature,
            "epoch": epoch,
            "steps": steps.steps,
            "done": last,
            "model": run.model.state_dict(),
            "optimizer": steps.optimizer.state_dict(),
            "schedule": None if steps.schedule is None else steps.schedule.state_dict(),
            "method": run.method.state_dict(),
            "generator": run.generator.get_state(),
            "selection": run.selection.state_dict(),
            "history": run.history.state_dict(),
            "dual": steps.dual.state_dict() if steps.dual is not None else None,
            "scaler": steps.scaler.state_dict() if steps.scaler is not None else None,
        }
        atomic_writer(self.path, lambda p, state=state: torch.save(state, p), ".pt")


__all__ = ["run_signature", "Checkpointer"]
