"""The result type every estimator returns, what each estimator targets, and small shared helpers.

All estimators approximate the memorization score of training example i, paper eq. 8 with j = i:

    mem_i = p_D(y_i | x_i) - p_{D minus i}(y_i | x_i)

(the probability of the true label under the predictor trained with i, minus trained without i). They differ
in the training sets they average over, the scale they report on and the model class they are exact for;
``TARGETS`` says which quantity each one targets and every output carries that sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.groups import TRAIN, GroupData
from ..errors import ConfigError, DataError
from ..lazy import lazy_module

torch = lazy_module("torch")

# estimator -> (the quantity it targets, its units)
TARGETS: dict[str, tuple[str, str]] = {
    "subsample": (
        "Feldman-Zhang subsampled memorization (eq. 8 with j = i, averaged over training sets of half size): "
        "E[p_S(y_i|x_i) | i in S] - E[p_S(y_i|x_i) | i not in S], S a uniformly random half of the training set",
        "probability of the true label, in [-1, 1]",
    ),
    "trak": (
        "TRAK self-influence (Park et al. 2023): the linearised-model estimate of how much the margin "
        "log p(y_i|x_i)/(1 - p(y_i|x_i)) drops when i is left out, phi_i^T (Phi^T Phi + lambda I)^-1 phi_i "
        "(1 - p_i), averaged over M models",
        "margin-scale self-influence, in [0, 1] (a leverage times 1 - p)",
    ),
    "newton": (
        "leave-one-out eq. 8 with j = i for the L2-regularised logistic head at its optimum, removing i by one "
        "Newton step (exact for the quadratic model of the loss)",
        "probability of the true label, in [-1, 1]",
    ),
    "loo": (
        "exact leave-one-out eq. 8 with j = i for the L2-regularised logistic head: p(y_i|x_i) at the optimum "
        "minus at the optimum retrained without i (converged, warm-started)",
        "probability of the true label, in [-1, 1]",
    ),
    "influence": (
        "first-order influence-function approximation of the leave-one-out eq. 8 with j = i for the "
        "L2-regularised logistic head (the Newton step without its 1/(1 - w_i h_i) leverage correction)",
        "probability of the true label, in [-1, 1]",
    ),
}
# methods whose trained predictor the audit scores; DFR is left out: its last layer is fitted on validation data
AUDIT_METHODS = ("erm", "mat", "lc", "ula", "xrm-groupdro")
# the exact linear estimators (newton / loo / influence) model an L2-logistic head: ERM's, or MAT's with its shift
LINEAR_DEFAULT_WD = 1e-3  # the L2 weight decay of the linear estimators (newton, loo, influence) by default
LINEAR_AUDIT_METHODS = ("erm", "mat")


@dataclass
class MemorizationScores:
    """Per-training-example scores from one estimator for one training method.

    ``scores`` (n,) float64; ``se`` (n,) standard errors where the estimator has them (else None);
    ``p_true`` (n,) p(y_i|x_i) of the predictor trained on all of D where the estimator trains one (the
    trivial baseline is 1 - p_true); ``extra`` holds estimator-specific per-example arrays (n,) and
    ``params`` the settings, both written to the results files.
    """

    estimator: str
    method: str
    scores: np.ndarray
    se: np.ndarray | None = None
    p_true: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def target(self) -> str:
        return TARGETS[self.estimator][0]

    @property
    def units(self) -> str:
        return TARGETS[self.estimator][1]

    @property
    def baseline(self) -> np.ndarray | None:
        """The trivial baseline 1 - p(y_i | x_i) of the full-data predictor, or None."""
        return None if self.p_true is None else 1.0 - self.p_true

    def describe(self) -> dict[str, Any]:
        """What the scores are, for results files."""
        return {"estimator": self.estimator, "method": self.method, "target": self.target, "units": self.units,
                "params": self.params, "seconds": self.seconds}


def check_method(method: str) -> str:
    if method not in AUDIT_METHODS:
        raise ConfigError(f"memorization audit supports methods {', '.join(AUDIT_METHODS)}, got '{method}'")
    return method


def train_arrays(data: GroupData) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (n, d) float32, y (n,) int64) of the training split; DataError when it is too small to audit."""
    idx = data.indices(TRAIN)
    if len(idx) < 4:
        raise DataError(f"the training split has {len(idx)} examples; a memorization audit needs at least 4")
    return data.x[idx], data.y[idx]


def true_label_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[..., y]: logits (..., n, K), y (n,) -> (..., n)."""
    p = logits.float().softmax(dim=-1)
    return p.gather(-1, y.expand(p.shape[:-1]).unsqueeze(-1)).squeeze(-1)
