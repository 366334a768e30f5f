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
from ..fingerprint import data_fingerprint, what_changed
from ..methods import Method
from .config import TrainConfig

if TYPE_CHECKING:
    from .fitting import Run


def run_signature(
    method: Method, cfg: TrainConfig, data: GroupData, model_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: the method and its settings, the model's shape and the
    data's content (``fingerprint.data_fingerprint``)."""
    # how a run is shown, where it runs and how far ahead it loads change nothing it computes
    speed = ("progress", "progress_label", "device", "prefetch")
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in speed}
    return {
        "method": method.name,
        "describe": repr(sorted(method.describe().items())),
        "config": repr(keep),
        "model": repr(sorted((model_kwargs or {}).items())),
        "n": len(data),
        "n_train": int((data.split == TRAIN).sum()),
        "data": data_fingerprint(data),
    }


def _mismatch(path: Path, old: Any, new: dict[str, Any]) -> str:
    """One line saying how the checkpoint at ``path`` differs from this run."""
    if not isinstance(old, dict):
        return f"checkpoint {path} holds no run signature: not a memaware checkpoint"
    if "data" in old and old["data"] != new["data"]:
        return f"checkpoint {path} was written on other data: {what_changed(old['data'], new['data'])}"
    for key, what in (("method", "method"), ("describe", "method's hyper-parameters"), ("config", "settings"),
                      ("model", "model (--hidden, --bias)"), ("n", "number of examples"),
                      ("n_train", "training split")):  # fmt: skip
        if old.get(key) != new.get(key):
            detail = _first_difference(old.get(key), new.get(key))
            return f"checkpoint {path} was written by a run with other {what} ({detail})"
    return f"checkpoint {path} was written by a different run"


def _first_difference(old: Any, new: Any) -> str:
    """'name: then -> now' of the first differing item of two reprs of sorted settings, else both values."""
    import ast

    try:
        a, b = ast.literal_eval(old), ast.literal_eval(new)
    except (ValueError, SyntaxError, TypeError):
        return f"{old!r} then, {new!r} now"
    a, b = dict(a), dict(b)
    for k in sorted(set(a) | set(b), key=str):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            return f"{k}: {a.get(k, '<absent>')!r} then, {b.get(k, '<absent>')!r} now"
    return "same values"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (``weights_only``), or a ``ConfigError`` (one line) for a truncated, empty or
    foreign file."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, zip errors, ... for a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:120]  # torch's first sentence
        raise ConfigError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {first}): truncated or not a memaware "
            "checkpoint; start over with --overwrite"
        ) from None
    if not isinstance(state, dict) or "signature" not in state or "model" not in state:
        raise ConfigError(f"checkpoint {path} is not a memaware checkpoint; start over with --overwrite")
    return state


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
            state = load_checkpoint(self.path)
            old = state["signature"]
            if isinstance(old, dict) and "data" not in old:  # written before fingerprints: n and n_train only
                old = {**old, "data": self.signature["data"], "model": self.signature["model"]}
            if old != self.signature:
                raise ConfigError(_mismatch(self.path, state["signature"], self.signature))
            try:
                run.model.load_state_dict(state["model"])
            except (RuntimeError, KeyError, TypeError) as e:
                first = str(e).strip().splitlines()[0][:120]
                raise ConfigError(f"checkpoint {self.path} does not fit this run's model ({first})") from None
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


__all__ = ["run_signature", "load_checkpoint", "Checkpointer"]
