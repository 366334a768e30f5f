"""Datasets: the ``GroupData`` contract, ``.npz`` interchange, and the paper's synthetic setups."""

from .groups import TEST, TRAIN, VAL, GroupData, group_name, load_npz
from .synthetic import make_setup21

__all__ = ["GroupData", "load_npz", "group_name", "make_setup21", "TRAIN", "VAL", "TEST"]
