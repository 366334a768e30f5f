"""memaware: memorization-aware training (MAT) and the experiments of 'The Pitfalls of Memorization'."""

from .data import GroupData, load_npz, make_setup21
from .errors import ConfigError, DataError, MemawareError
from .methods import METHODS, Method, make_method, mat_log_shift
from .metrics import group_report, majority_minority_acc, worst_group_acc
from .models import MultiHeadNet, build_model
from .train import FitResult, TrainConfig, fit

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
