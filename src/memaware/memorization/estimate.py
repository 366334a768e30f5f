"""One entry point over all estimators: ``estimate(data, method, estimator, ...)`` -> ``MemorizationScores``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.groups import GroupData
from ..engine import TrainConfig
from ..errors import ConfigError
from .linear import ESTIMATORS as LINEAR_ESTIMATORS
from .linear import linear_scores
from .own_model import ModelFactory
from .scores import TARGETS, MemorizationScores
from .subsample import subsample_scores
from .trak import trak_scores

DEFAULT_MODELS = {"subsample": 32, "trak": 5}


def estimate(
    data: GroupData,
    method: str,
    estimator: str = "subsample",
    config: TrainConfig | None = None,
    num_models: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    temperature: float = 0.1,
    proj_dim: int | None = None,
    trak_lambda: float = 0.0,
    trak_params: str | Sequence[str] = "all",
    progress: bool = False,
    model_factory: ModelFactory | None = None,
) -> MemorizationScores:
    """Memorization scores of ``data``'s training split for ``method`` ('erm' | 'mat') with ``estimator``
    (see ``TARGETS`` for what each one targets). ``num_models``: K half-models (subsample, default 32) or M models
    (trak, default 5).

    The models are memaware's heads on ``data.x`` (``model_kwargs``: hidden, bias), or with
    ``model_factory(num_heads)`` (``fit``'s contract: a fresh ``nn.Module`` mapping rows of ``data.x`` to
    (b, num_heads, K) logits, e.g. ``models.backbone_source.end_to_end_factory``) the caller's network, each model
    trained end to end by ``fit`` with ``config``, one at a time, model m with seed ``config.seed + m``
    (``own_model.py``); subsample and trak only. Records state the settings used (``MemorizationScores.params``)."""
    if estimator not in TARGETS:
        raise ConfigError(f"unknown estimator '{estimator}', choose from {', '.join(TARGETS)}")
    k = num_models if num_models is not None else DEFAULT_MODELS.get(estimator)
    if model_factory is not None and estimator not in ("subsample", "trak"):
        raise ConfigError(f"{estimator} models an L2-logistic head on features; for your own network use subsample "
                          "or trak (or audit heads on its frozen features)")  # fmt: skip
    if estimator == "subsample":
        return subsample_scores(data, method, config, k, model_kwargs, temperature, progress=progress,
                                model_factory=model_factory)  # fmt: skip
    if estimator == "trak":
        return trak_scores(data, method, config, k, model_kwargs, temperature, proj_dim, trak_lambda, trak_params,
                           model_factory=model_factory)  # fmt: skip
    assert estimator in LINEAR_ESTIMATORS
    return linear_scores(data, method, estimator, config, model_kwargs, temperature)
