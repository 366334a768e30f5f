"""memaware: memorization-aware training (MAT) and the experiments of 'The Pitfalls of Memorization'."""

from .data import GroupData, load_npz, make_setup21
from .engine import FitResult, TrainConfig, fit
from .errors import ConfigError, DataError, MemawareError
from .methods import METHODS, Method, make_method, mat_log_shift
from .metrics import group_report, majority_minority_acc, worst_group_acc
from .models import MultiHeadNet, build_model


def __getattr__(name: str):
    """Lazy exports of the heavier entry points (real datasets, benchmarks, sweeps) to keep ``import memaware`` fast."""
    lazy = {
        "open_dataset": "memaware.data.datasets",
        "build_benchmark": "memaware.data.benchmarks",
        "execute": "memaware.sweep.runner",
        "sample_hparams": "memaware.sweep.hparams",
        "train_many": "memaware.engine.many",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'memaware' has no attribute '{name}'")

__version__ = "0.1.0"
__all__ = [
    "GroupData",
    "load_npz",
    "make_setup21",
    "MemawareError",
    "DataError",
    "ConfigError",
    "METHODS",
    "Method",
    "make_method",
    "mat_log_shift",
    "group_report",
    "majority_minority_acc",
    "worst_group_acc",
    "MultiHeadNet",
    "build_model",
    "FitResult",
    "TrainConfig",
    "fit",
]
