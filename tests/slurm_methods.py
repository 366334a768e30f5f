"""A method for the Slurm tests (imported by Slurm jobs by name, tests/ on PYTHONPATH): ERM whose every optimiser
step also sleeps MEMAWARE_SLOW_STEP_S seconds, so that a run outlasts a one-minute time limit. Sleeping changes no
number, so its results must equal an uninterrupted run's."""

from __future__ import annotations

import os
import time

from memaware.methods import ERM


class SlowERM(ERM):
    name = "slow-erm"
    summary = "ERM that sleeps after every step (for time-limit tests)"

    def after_step(self, logits, batch, model) -> None:
        time.sleep(float(os.environ.get("MEMAWARE_SLOW_STEP_S", "0")))
        super().after_step(logits, batch, model)
