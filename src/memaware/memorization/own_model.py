"""The audit of a caller's own network: every model trained end to end by ``memaware.engine.fit`` with the caller's
``model_factory(num_heads)`` (the contract of ``fit``'s: a fresh ``nn.Module`` mapping rows of ``data.x`` to
(b, num_heads, K) logits), one model at a time, model m with seed ``config.seed + m``.

A factory whose signature has a ``seed`` parameter is called as ``model_factory(num_heads, seed=config.seed + m)``
(so it can draw its own initial weights, as ``experiments.memorization.own_model`` does); any other is called
under ``torch.manual_seed(config.seed + m)`` in a forked RNG (the global RNG is left as it was), so a network whose
layers draw their first weights from torch's global RNG starts differently in every model. The batched program of
``batched.py`` is only for memaware's own heads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.groups import GroupData
from ..engine import FitResult, TrainConfig, fit
from ..errors import ConfigError

ModelFactory = Callable[..., torch.nn.Module]
TRAINING_END_TO_END = "end-to-end"
EVAL_ROWS = 256  # rows per forward when an end-to-end model predicts (each batch loads its images)


def takes_seed(model_factory: ModelFactory) -> bool:
    """Whether ``model_factory`` has a ``seed`` parameter that can be passed by keyword."""
    try:
        param = inspect.signature(model_factory).parameters.get("seed")
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


def seeded_factory(model_factory: ModelFactory, seed: int) -> Callable[[int], torch.nn.Module]:
    """``model_factory`` for the model with seed ``seed`` (module docstring)."""
    if not callable(model_factory):
        raise ConfigError(f"model_factory must be a function of num_heads, got {type(model_factory).__name__}")
    if takes_seed(model_factory):
        return functools.partial(model_factory, seed=int(seed))

    def build(num_heads: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return model_factory(num_heads)

    return build


def describe_factory(model_factory: ModelFactory) -> str:
    """The model's name for records: the factory's ``backbone_label`` (``end_to_end_factory``'s), its
    ``description``, or its qualified name."""
    for attr in ("description", "backbone_label"):
        label = getattr(model_factory, attr, None)
        if isinstance(label, str) and label:
            return label
    fn = getattr(model_factory, "func", model_factory)  # a functools.partial
    return getattr(fn, "__qualname__", type(fn).__name__)


def own_model_params(cfg: TrainConfig, model_factory: ModelFactory) -> dict[str, Any]:
    """The settings the caller's models were trained with, for records: the config given, the model's name."""
    return {"epochs": cfg.epochs, "max_steps": cfg.max_steps, "lr": cfg.lr, "optimizer": cfg.optimizer,
            "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
            "schedule": cfg.schedule, "seed": cfg.seed, "model": describe_factory(model_factory),
            "training": TRAINING_END_TO_END, "seeds": "seed + m for model m"}  # fmt: skip


def own_model_factory(dataset: Any, backbone: Any, *, seed: int = 0, **kwargs: Any) -> ModelFactory:
    """``model_factory(num_heads, seed=...)`` over ``models.backbone_source.end_to_end_factory``: ``backbone``
    (a catalogue name, ``package.module:name``, an ``nn.Module`` or a zero-argument callable) under memaware's
    linear heads, its initial weights and heads drawn from the ``seed`` each model is given (``end_to_end_factory``
    alone starts every model from its one seed). ``kwargs`` go to ``end_to_end_factory`` (weights, max_length,
    bias, device). The backbone is checked now (one probe forward): a bad one is a one-line ``ConfigError``."""
    from ..models.backbone_source import end_to_end_factory

    per_seed = {int(seed): end_to_end_factory(dataset, backbone, seed=int(seed), **kwargs)}

    def factory(num_heads: int, seed: int = int(seed)) -> torch.nn.Module:
        if int(seed) not in per_seed:
            per_seed[int(seed)] = end_to_end_factory(dataset, backbone, seed=int(seed), **kwargs)
        return per_seed[int(seed)](num_heads)

    first = per_seed[int(seed)]
    factory.backbone_label = first.backbone_label  # type: ignore[attr-defined]
    factory.feature_dim = first.feature_dim  # type: ignore[attr-defined]
    return factory


def fit_own_models(
    data: GroupData | Sequence[GroupData],
    method: str,
    config: TrainConfig,
    seeds: Sequence[int],
    model_factory: ModelFactory,
    progress: bool = False,
    **method_kwargs: Any,
) -> list[FitResult]:
    """Model k = ``fit(data_k, method, config with seed seeds[k], model_factory=...)`` (MAT with its XRM phase),
    one at a time. ``data`` is one ``GroupData`` for all models or one per model (a half-sample each)."""
    datas = [data] * len(seeds) if isinstance(data, GroupData) else list(data)
    if len(datas) != len(seeds):
        raise ConfigError(f"{len(datas)} data sets for {len(seeds)} models")
    cfg = config if config.eval_batch_size <= EVAL_ROWS else dataclasses.replace(config, eval_batch_size=EVAL_ROWS)
    results = []
    for d, seed in tqdm(list(zip(datas, seeds, strict=True)), desc=f"{method} models (end to end)",
                        disable=not progress, leave=False):  # fmt: skip
        run_cfg = dataclasses.replace(cfg, seed=int(seed), progress=False)
        results.append(fit(d, method, run_cfg, model_factory=seeded_factory(model_factory, seed), **method_kwargs))
    return results


__all__ = ["TRAINING_END_TO_END", "describe_factory", "fit_own_models", "own_model_factory", "own_model_params",
           "seeded_factory", "takes_seed"]
