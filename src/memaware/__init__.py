"""memaware: memorization-aware training (MAT) and the experiments of 'The Pitfalls of Memorization'.

Every public name is imported on first use (``memaware.lazy``): ``import memaware`` and the ``memaware`` command's
argument parsing stay free of torch."""

from .errors import ConfigError, DataError, MemawareError
from .lazy import lazy_exports

_EXPORTS = {
    "GroupData": "memaware.data",
    "load_npz": "memaware.data",
    "make_setup21": "memaware.data",
    "FitResult": "memaware.engine",
    "TrainConfig": "memaware.engine",
    "fit": "memaware.engine",
    "METHODS": "memaware.methods",
    "Method": "memaware.methods",
    "make_method": "memaware.methods",
    "mat_log_shift": "memaware.methods",
    "group_report": "memaware.metrics",
    "majority_minority_acc": "memaware.metrics",
    "worst_group_acc": "memaware.metrics",
    "MultiHeadNet": "memaware.models",
    "build_model": "memaware.models",
    "open_dataset": "memaware.data.datasets",
    "load_table": "memaware.data.datasets",
    "build_benchmark": "memaware.data.benchmarks",
    "execute": "memaware.sweep.runner",
    "sample_hparams": "memaware.sweep.hparams",
    "train_many": "memaware.engine.many",
    "XRMTwins": "memaware.ownloop",
    "MATLoss": "memaware.ownloop",
    "MATSingleRun": "memaware.ownloop",
}
__getattr__ = lazy_exports("memaware", _EXPORTS)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__version__ = "0.1.0"
__all__ = [
    "GroupData",
    "load_npz",
    "load_table",
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
    "XRMTwins",
    "MATLoss",
    "MATSingleRun",
]
