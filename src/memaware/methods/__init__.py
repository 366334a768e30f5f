"""Training methods: each a small class in a registry (name -> class), all trained by ``memaware.engine.fit``.

Each module declares its method's facts (name, group labels, hyper-parameters, phases); the registry is the only
list of methods. A user's own ``Method`` subclass works everywhere as ``package.module:Class``.
"""

from .balancing import RWG, SUBG
from .base import Batch, Method, Phase, TrainContext
from .dfr import DFR
from .erm import ERM
from .groupdro import GroupDRO
from .jtt import JTT
from .lc import LC
from .mat import MAT, mat_log_shift
from .registry import METHODS, classifiers, is_reference, make_method, method_class, register
from .regression import MSERegression
from .space import FAMILIES, Choice, EpochFraction, HParam, LogUniform
from .ula import ULA
from .xrm import XRM
from .xrm_groupdro import XRMGroupDRO

__all__ = [
    "Method", "TrainContext", "Batch", "Phase", "METHODS", "make_method", "method_class", "register", "classifiers",
    "is_reference", "mat_log_shift", "HParam", "LogUniform", "Choice", "EpochFraction", "FAMILIES",
    "ERM", "GroupDRO", "RWG", "SUBG", "JTT", "XRM", "MAT", "LC", "ULA", "XRMGroupDRO", "DFR", "MSERegression",
]  # fmt: skip
