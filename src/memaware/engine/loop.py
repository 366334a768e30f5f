"""The one training loop. Every run goes through ``run_epochs``: one model at a time (``engine.single``) or many
members of a head at once (``memaware.engine.many``); what differs between them is only how one step is taken
(the ``Steps`` they pass in), never the epoch structure, the step budget, the evaluation cadence or stopping."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .progress import RunProgress


class Steps(Protocol):
    """How a run takes its steps. ``steps`` counts the optimiser steps taken so far (resumable)."""

    steps: int

    def epoch(self) -> Iterable[Any]:
        """The coming epoch's step payloads, in order (drawn at the start of the epoch from the run's generator)."""
        ...

    def step(self, payload: Any) -> None:
        """One optimiser step (and its per-step bookkeeping); increments ``steps``."""
        ...

    def should_stop(self) -> bool:
        """Asked after every epoch: True ends training early (a method's target reached)."""
        ...


def evaluation_due(
    epoch: int, epochs: int, eval_every: int, stop: bool, eval_every_steps: int = 0, evaluated_now: bool = False
) -> bool:
    """Whether an epoch's end is an evaluation: every ``eval_every`` epochs, at the last epoch and when training
    stops early. With ``eval_every_steps`` > 0 evaluations follow the step count instead (``step_evaluation_due``,
    mid-epoch) and an epoch's end is one only when training ends there, unless that step was just evaluated
    (``evaluated_now``)."""
    if eval_every_steps:
        return (epoch == epochs or stop) and not evaluated_now
    return epoch % eval_every == 0 or epoch == epochs or stop


def step_evaluation_due(steps: int, eval_every_steps: int) -> bool:
    """Whether the optimiser step just taken (``steps`` in all) is an evaluation: every ``eval_every_steps``."""
    return eval_every_steps > 0 and steps > 0 and steps % eval_every_steps == 0


def run_epochs(
    steps: Steps,
    *,
    first: int,
    epochs: int,
    max_steps: int = 0,
    eval_every: int = 1,
    eval_every_steps: int = 0,
    on_eval: Callable[[int], None] | None = None,
    on_step_eval: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int, bool], None] | None = None,
    label: str = "",
    progress: bool = False,
    meter: RunProgress | None = None,
) -> int:
    """Runs epochs ``first`` .. ``epochs`` and returns the last epoch run (``first - 1`` when none ran).

    ``max_steps`` > 0 stops after that many optimiser steps in all (the authors count steps, not epochs), < 0
    takes no step at all (one evaluation at epoch ``first``: a model computed before the loop, DFR's);
    ``on_eval(epoch)`` runs where ``evaluation_due``; with ``eval_every_steps`` > 0, ``on_step_eval(epoch)``
    (default: ``on_eval``) runs after every step where ``step_evaluation_due``, mid-epoch included;
    ``on_epoch_end(epoch, stopped)`` after every epoch (checkpoints, snapshots). A progress bar shows on a terminal
    when ``progress`` is set, or the one ``meter`` draws (``engine.progress.RunProgress``, which also times the
    evaluations).
    """
    epoch = first - 1
    meter = meter or RunProgress(label, steps, first, epochs, progress)
    step_eval = on_step_eval if on_step_eval is not None else on_eval
    try:
        for epoch in range(first, epochs + 1):
            for payload in steps.epoch():
                if max_steps and steps.steps >= max_steps:
                    break
                steps.step(payload)
                meter.after_step(epoch)
                if eval_every_steps and step_eval is not None and step_evaluation_due(steps.steps, eval_every_steps):
                    meter.timed_evaluation(step_eval, epoch)
            stop = steps.should_stop() or bool(max_steps and steps.steps >= max_steps)
            just = bool(eval_every_steps) and step_evaluation_due(steps.steps, eval_every_steps)
            if on_eval is not None and evaluation_due(epoch, epochs, eval_every, stop, eval_every_steps, just):
                meter.timed_evaluation(on_eval, epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, stop)
            meter.after_epoch(epoch)
            if stop:
                break
    finally:
        meter.close()
    return epoch
