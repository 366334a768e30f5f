"""Optional cross-check: the same TRAK self-influence diagonal computed by the ``traker`` package (MadryLab's
reference implementation; ``pip install traker``). Not needed by anything else in memaware.

Pitfalls this adapter guards against: traker defaults to ``device='cuda'`` (pass 'cpu' here), its default
projection dimension (2048) exceeds the parameter count of small models, and with its lambda = 0 the
then-singular X^T X is inverted in float32 without complaint, which silently gives meaningless scores; it
also rescales (X^T X)^-1 by its mean absolute entry, so its scores equal the native ones only up to a positive
factor per model (compare by correlation). It knows nothing of MAT's training shift (it takes Q = 1 - p from
the predictor f alone), so cross-check it on ERM models.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .fitting import ScoredModel
from .trak import select_params

MIN_PROJ_DIM = 1


class _Logits(nn.Module):
    """(n, d) -> (n, K) logits of one head, the form traker's image-classification output function expects."""

    def __init__(self, net: nn.Module, head: int):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[:, self.head] if out.dim() == 3 else out


def traker_available() -> bool:
    try:
        import trak  # noqa: F401
    except ImportError:
        return False
    return True


def traker_self_influence(
    models: Sequence[ScoredModel],
    x: torch.Tensor,
    y: torch.Tensor,
    proj_dim: int,
    params: str | Sequence[str] = "all",
    seed: int = 0,
) -> np.ndarray:
    """diag of traker's (n, n) train-on-train score matrix: (n,) self-influence, up to a positive scale."""
    if not traker_available():
        raise ConfigError("the traker cross-check needs the optional package 'traker' (pip install traker)")
    from trak import TRAKer

    names = select_params(models[0].model, params)
    p_dim = sum(dict(models[0].model.named_parameters())[n].numel() for n in names)
    if not MIN_PROJ_DIM <= proj_dim < min(len(y), p_dim):
        raise ConfigError(
            f"traker: proj_dim must be in [{MIN_PROJ_DIM}, min(n, p) = {min(len(y), p_dim)}), got {proj_dim} "
            "(its lambda = 0 inverts a singular X^T X otherwise)"
        )
    wrapper = _Logits(models[0].model, models[0].head)
    grad_wrt = [f"net.{n}" for n in names]
    batch = (x.float(), y.long())
    with tempfile.TemporaryDirectory() as tmp:
        traker = TRAKer(model=wrapper, task="image_classification", train_set_size=len(y), save_dir=tmp,
                        device="cpu", proj_dim=proj_dim, use_half_precision=False, projector_seed=seed,
                        grad_wrt=grad_wrt, logging_level=logging.ERROR)
        states = [_Logits(m.model, m.head).state_dict() for m in models]
        for mid, state in enumerate(states):
            traker.load_checkpoint(state, model_id=mid)
            traker.featurize(batch=batch, num_samples=len(y))
        traker.finalize_features()
        for mid, state in enumerate(states):
            traker.start_scoring_checkpoint(exp_name="self", checkpoint=state, model_id=mid, num_targets=len(y))
            traker.score(batch=batch, num_samples=len(y))
        scores = np.asarray(traker.finalize_scores(exp_name="self"))
    return np.diag(scores).astype(np.float64).copy()
