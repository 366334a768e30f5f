"""The training engine: one loop (``loop.run_epochs``) that every run goes through, one run at a time (``fit``) or
many runs of a head at once (``memaware.engine.many``), with data order, optimisers, the Gram-matrix fast path,
evaluation history and checkpoint/resume."""

from .batches import epoch_batches, sampling_weights
from .config import OPTIMIZERS, SELECTIONS, TrainConfig
from .fit import FitResult, fit, plain_linear_forward

__all__ = [
    "TrainConfig", "SELECTIONS", "OPTIMIZERS", "FitResult", "fit", "epoch_batches", "sampling_weights",
    "plain_linear_forward",
]  # fmt: skip
