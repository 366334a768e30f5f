"""Training methods: each a small class in a registry (name -> class), all trained by ``memaware.train.fit``."""

from . import balancing, erm, groupdro, jtt, mat, regression, xrm  # noqa: F401  (registers the methods)
from .base import Method, TrainContext
from .mat import mat_log_shift
from .registry import METHODS, make_method, register

__all__ = ["Method", "TrainContext", "METHODS", "make_method", "register", "mat_log_shift"]
