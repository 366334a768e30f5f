"""The training engine: one loop (``loop.run_epochs``) that every run goes through, one run at a time (``fit``) or
many runs of a head at once (``memaware.engine.many``), with data order, optimisers, the Gram-matrix fast path,
evaluation history and checkpoint/resume. ``TrainConfig`` and the option names import without torch (the command
line checks them before any work); everything else is imported on first use."""

from ..lazy import lazy_exports
from .config import OPTIMIZERS, SELECTIONS, TrainConfig

__getattr__ = lazy_exports(
    "memaware.engine",
    {
        "FitResult": "memaware.engine.fitting",
        "fit": "memaware.engine.fitting",
        "plain_linear_forward": "memaware.engine.fitting",
        "epoch_batches": "memaware.engine.batches",
        "sampling_weights": "memaware.engine.batches",
    },
)

__all__ = [
    "TrainConfig", "SELECTIONS", "OPTIMIZERS", "FitResult", "fit", "epoch_batches", "sampling_weights",
    "plain_linear_forward",
]  # fmt: skip
