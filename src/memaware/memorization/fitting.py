"""The trained predictors an audit scores: M full-data models of a method (full batch: one batched program, else
``fit`` per model), each with the logit shift its training loss used (MAT) so that estimators can tell the training
loss's probability p~_i (with shift) from the predictor's p(y_i | x_i) (without)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.groups import GroupData
from ..engine import TrainConfig, fit
from ..errors import ConfigError
from ..methods.mat import mat_log_shift
from .batched import train_subset_models
from .own_model import EVAL_ROWS, ModelFactory, fit_own_models
from .scores import check_method, train_arrays


@dataclass
class ScoredModel:
    """A trained network ``model`` ((n, d) -> (n, H, K) or (n, K) logits) predicting with head ``head``, and the
    training-loss logit shift (n_train, K) aligned with the training split (None for ERM)."""

    model: nn.Module
    head: int = 0
    shift: torch.Tensor | None = None
    batch_size: int = 8192  # rows per forward in ``logits``

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, K) logits of the predictor (no shift), on the CPU."""
        if len(x) <= self.batch_size:
            out = self.model(x.to(model_device(self.model)))
        else:
            dev, bs = model_device(self.model), self.batch_size
            out = torch.cat([self.model(x[i : i + bs].to(dev)) for i in range(0, len(x), bs)])
        return (out[:, self.head] if out.dim() == 3 else out).cpu()


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without any)."""
    return next(iter(model.parameters()), torch.empty(0)).device


def check_config(cfg: TrainConfig | None) -> TrainConfig:
    cfg = cfg or TrainConfig(selection="last")
    if cfg.selection != "last":
        raise ConfigError("memorization scores are for the final model; use TrainConfig(selection='last')")
    return cfg


def train_full_models(
    data: GroupData,
    method: str,
    config: TrainConfig | None,
    num_models: int,
    model_kwargs: dict[str, Any] | None = None,
    temperature: float = 0.1,
    model_factory: ModelFactory | None = None,
) -> list[ScoredModel]:
    """``num_models`` models of ``method`` on the whole training split, model m with seed ``config.seed + m``;
    with ``model_factory``, the caller's network trained end to end, one ``fit`` per model (``own_model.py``)."""
    check_method(method)
    cfg = check_config(config)
    if num_models < 1:
        raise ConfigError(f"need at least one model, got {num_models}")
    model_kwargs = dict(model_kwargs or {})
    seeds = [cfg.seed + m for m in range(num_models)]
    kwargs = {"temperature": temperature} if method == "mat" else {}
    if model_factory is not None:
        if model_kwargs:
            raise ConfigError("model_kwargs build memaware's heads; with a model_factory the network is the caller's")
        results = fit_own_models(data, method, cfg, seeds, model_factory, **kwargs)
        return [ScoredModel(r.model.eval(), r.method.num_heads - 1 if method == "mat" else 0,
                            getattr(r.method, "shift", None) if method == "mat" else None, EVAL_ROWS)
                for r in results]  # fmt: skip
    if cfg.batch_size == 0:  # full batch: all M models as members of one batched program
        results = train_subset_models(data, method, None, cfg, seeds, model_kwargs, **kwargs)
    else:
        results = [fit(data, method, dataclasses.replace(cfg, seed=s), model_kwargs=model_kwargs, **kwargs)
                   for s in seeds]  # fmt: skip
    out = []
    for res in results:
        shift = getattr(res.method, "shift", None) if method == "mat" else None
        out.append(ScoredModel(res.model.eval(), res.model.heads.num_heads - 1 if method == "mat" else 0, shift))
    return out


def xrm_shift(data: GroupData, config: TrainConfig | None, temperature: float = 0.1,
              model_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    """MAT's training shift log(p_ho(. | x_i) + 1e-6) (n_train, K) from XRM held-out logits on the whole
    training split (phase 1 of two-phase MAT, run by ``fit``)."""
    cfg = check_config(config)
    res = fit(data, "xrm", cfg, model_kwargs=model_kwargs)
    _, y = train_arrays(data)
    return mat_log_shift(res.outputs["heldout_logits"].float(), y, temperature, data.num_classes)
