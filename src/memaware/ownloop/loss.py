"""``MATLoss``: memorization-aware training's criterion (paper eq. 7) for a training loop of your own.

With held-out logits h_i (n, K) of a model that never trained on example i (``XRMTwins.heldout_logits_all``, your
own cross-fitting, or ``fit(data, "xrm").outputs["heldout_logits"]``) and temperature tau, ``mat_log_shift``
computes once, over the whole training set,

    s_i = log(p_ho(. | x_i) + 1e-6),  p_ho(y | x_i) = sum_yho softmax(h_i / tau)_yho p(y | yho),

and the loss of a batch is CE(f(x_i) + s_i, y_i). The shift is a training device only: predict with f(x) alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..methods.mat import mat_log_shift
from .checks import check_labels, check_logits, check_positions, check_temperature, shape_of

REDUCTIONS = ("mean", "sum", "none")
DEFAULT_TEMPERATURE = 0.1  # memaware's MAT default; the authors search {0.001, 0.01, 0.1}


class MATLoss(nn.Module):
    """Eq. 7's shifted cross-entropy, a criterion ``mat_loss(logits, y, idx)`` like ``nn.CrossEntropyLoss``.

    ``heldout_logits`` (n, K): row i for the example at position i of the training set (finite); ``y_train`` (n,)
    the training labels (the original ones, not XRM's flipped ones), in 0..K-1. ``temperature`` tau > 0 sharpens
    the held-out predictions before p(y | yho) is estimated: 0.1 is memaware's MAT default, the largest value of
    the authors' search grid {0.001, 0.01, 0.1}; select it on validation worst-group accuracy when you can.
    ``reduction``: 'mean' (default), 'sum' or 'none', as in torch.

    The shift ``shift`` (n, K) is a buffer: ``mat_loss.to(device)`` moves it and ``state_dict`` saves it.
    """

    def __init__(
        self,
        heldout_logits: torch.Tensor,
        y_train: torch.Tensor,
        temperature: float = DEFAULT_TEMPERATURE,
        reduction: str = "mean",
    ):
        super().__init__()
        if not isinstance(heldout_logits, torch.Tensor) or heldout_logits.dim() != 2 or heldout_logits.shape[1] < 2:
            raise ConfigError(f"heldout_logits must be a 2-D (n, K) tensor with K >= 2, got {shape_of(heldout_logits)}")
        if not heldout_logits.is_floating_point():
            raise ConfigError(f"heldout_logits must be floating point, got {heldout_logits.dtype}")
        n, k = heldout_logits.shape
        if n < 1:
            raise ConfigError(f"heldout_logits must have at least one row, got {tuple(heldout_logits.shape)}")
        finite = torch.isfinite(heldout_logits).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0])
            raise ConfigError(f"heldout_logits must be finite, got {heldout_logits[row].tolist()} at row {row}")
        y_train = check_labels("y_train", y_train, k, n)
        self.temperature = check_temperature(temperature)
        self.reduction = _check_reduction(reduction)
        self.num_train, self.num_classes = n, k
        h = heldout_logits.detach()
        h = h if h.dtype == torch.float64 else h.float()
        # p(y | yho) over the whole training set, once (never per batch: a batch may lack a class)
        self.register_buffer("shift", mat_log_shift(h, y_train.to(h.device), self.temperature, k))

    def shifted_logits(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(b, K) logits + (b, K) shift of the examples at positions idx (b,)."""
        check_logits("logits", logits, self.num_classes)
        pos = check_positions(idx, self.num_train, len(logits)).to(self.shift.device)
        return logits + self.shift[pos].to(device=logits.device, dtype=logits.dtype)

    def forward(
        self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """CE(logits + shift[idx], y): logits (b, K), y (b,), idx (b,) positions -> a scalar ('mean', 'sum') or
        (b,) ('none'). ``weight`` (b,) optional per-example weights; the 'mean' is then sum(w l) / sum(w)."""
        z = self.shifted_logits(logits, idx)
        y = check_labels("y", y, self.num_classes, len(logits)).to(logits.device)
        if weight is None:
            return F.cross_entropy(z, y, reduction=self.reduction)
        if not isinstance(weight, torch.Tensor) or weight.shape != (len(logits),):
            raise ConfigError(f"weight must have shape ({len(logits)},) (one per example), got {shape_of(weight)}")
        ce = F.cross_entropy(z, y, reduction="none") * weight.to(device=z.device, dtype=z.dtype)
        if self.reduction == "none":
            return ce
        return ce.sum() if self.reduction == "sum" else ce.sum() / weight.sum().to(ce.device, ce.dtype)

    def extra_repr(self) -> str:
        return f"num_train={self.num_train}, num_classes={self.num_classes}, temperature={self.temperature}"


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


__all__ = ["MATLoss", "DEFAULT_TEMPERATURE"]
