"""Datasets: the ``GroupData`` contract, ``.npz`` interchange, and the paper's synthetic setups. The names below are
imported on first use (``memaware.lazy``): the command line's checks and ``memaware datasets`` run without torch."""

from ..lazy import lazy_exports

_EXPORTS = {
    "GroupData": "memaware.data.groups",
    "load_npz": "memaware.data.groups",
    "group_name": "memaware.data.groups",
    "TRAIN": "memaware.data.groups",
    "VAL": "memaware.data.groups",
    "TEST": "memaware.data.groups",
    "make_setup21": "memaware.data.synthetic",
}
__getattr__ = lazy_exports("memaware.data", _EXPORTS)

__all__ = ["GroupData", "load_npz", "group_name", "make_setup21", "TRAIN", "VAL", "TEST"]
