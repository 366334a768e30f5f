"""``subsample``: the held-in minus held-out memorization score of Feldman & Zhang (2020), paper eq. 8 with j = i.

K models are trained on random halves S_1..S_K of the training set in a balanced design: the halves come in
complementary pairs (S, D minus S), so every example is held in by exactly K/2 models and held out by K/2.
With p_k(i) = p_{S_k}(y_i | x_i) the probability the k-th predictor gives example i's true label,

    mem_i = mean_{k: i in S_k} p_k(i) - mean_{k: i not in S_k} p_k(i)
    se_i  = sqrt(var_in / K_in + var_out / K_out)        (unbiased variances over the models)

This targets memorization at training-set size n/2 (each S_k is a different training set), not one
leave-one-out retraining. For MAT every half-model runs the whole MAT procedure on its half: XRM on S_k gives
held-out logits for S_k only, the shift's p(y | yho) is computed over S_k, f_k is trained with that shift, and
p_k(i) is f_k's prediction alone (the quantity MAT deploys). Full batch, all K models train at once as members of
one batched program, each on its own half (``batched.py``: the engine's batched mode, any model and method);
otherwise one ``memaware.engine.fit`` per half. With a caller's ``model_factory`` (their own network, trained end
to end) every half-model is one ``fit`` with that factory (``own_model.py``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.groups import TRAIN, GroupData
from ..engine import TrainConfig, fit
from ..errors import ConfigError
from .batched import train_subset_models
from .own_model import ModelFactory, fit_own_models, own_model_params
from .scores import MemorizationScores, check_method, train_arrays, true_label_prob


def balanced_design(n: int, num_models: int, generator: torch.Generator) -> torch.Tensor:
    """(K, n) bool masks: K/2 random halves and their complements, so each example is held in exactly K/2 times."""
    if num_models < 2 or num_models % 2:
        raise ConfigError(f"subsample needs an even number of models >= 2 (complementary halves), got {num_models}")
    masks = torch.zeros(num_models, n, dtype=torch.bool)
    for j in range(0, num_models, 2):
        perm = torch.randperm(n, generator=generator)
        masks[j, perm[: n // 2]] = True
        masks[j + 1] = ~masks[j]
    return masks


def held_in_minus_out(probs: torch.Tensor, masks: torch.Tensor) -> dict[str, np.ndarray]:
    """probs, masks (K, n) -> {score, se, p_in, p_out} (n,) each (se is nan where a side has < 2 models)."""
    p = probs.double()
    m = masks.double()
    out: dict[str, np.ndarray] = {}
    stats = []
    for w in (m, 1.0 - m):
        cnt = w.sum(0)
        mean = (p * w).sum(0) / cnt.clamp_min(1)
        var = (((p - mean) ** 2) * w).sum(0) / (cnt - 1).clamp_min(1)
        stats.append((mean, torch.where(cnt > 1, var / cnt, torch.full_like(var, float("nan")))))
    (mean_in, v_in), (mean_out, v_out) = stats
    out["score"] = (mean_in - mean_out).numpy()
    out["se"] = (v_in + v_out).sqrt().numpy()
    out["p_in"], out["p_out"] = mean_in.numpy(), mean_out.numpy()
    return out


def split_half_reliability(probs: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Scores from the even-numbered pairs of halves vs the odd-numbered ones (each a balanced design of K/2
    models); returns their Pearson r and the Spearman-Brown reliability 2r / (1 + r) of the full K-model score."""
    k = probs.shape[0]
    if k < 8 or k % 4:
        raise ConfigError(f"split-half reliability needs K divisible by 4 and >= 8, got {k}")
    pairs = torch.arange(k).view(-1, 2)
    a, b = pairs[0::2].reshape(-1), pairs[1::2].reshape(-1)
    sa = held_in_minus_out(probs[a], masks[a])["score"]
    sb = held_in_minus_out(probs[b], masks[b])["score"]
    r = float(np.corrcoef(sa, sb)[0, 1])
    return {"pearson_halves": r, "spearman_brown": 2 * r / (1 + r), "models_per_half": k // 2}


def _subset(data: GroupData, keep: torch.Tensor) -> GroupData:
    """``data`` with the training split restricted to the positions ``keep`` (bool over training rows)."""
    train = data.indices(TRAIN)
    rows = torch.cat([train[keep], torch.nonzero(data.split != TRAIN).squeeze(1)])
    return dataclasses.replace(data, x=data.x[rows], y=data.y[rows], a=data.a[rows], split=data.split[rows])


def subsample_probs(
    data: GroupData,
    method: str = "erm",
    config: TrainConfig | None = None,
    num_models: int = 32,
    model_kwargs: dict[str, Any] | None = None,
    temperature: float = 0.1,
    batched: bool | None = None,
    progress: bool = False,
    model_factory: ModelFactory | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trains the K half-models; returns (p_k(y_i | x_i) (K, n), held-in masks (K, n)) over the training split.

    Model k has seed ``config.seed + k``; the design is drawn from ``config.seed``. ``batched`` (default: when
    trained full batch) trains all K models in one batched program; otherwise K ``fit`` calls (the same models).
    ``model_factory(num_heads)``: the caller's network, each half-model trained end to end by ``fit`` with it
    (``own_model.py``; ``model_kwargs`` do not apply).
    """
    check_method(method)
    cfg = config or TrainConfig(selection="last")
    if cfg.selection != "last":
        raise ConfigError("memorization scores are for the final model; use TrainConfig(selection='last')")
    model_kwargs = dict(model_kwargs or {})
    x, y = train_arrays(data)
    masks = balanced_design(len(y), num_models, torch.Generator().manual_seed(cfg.seed))
    seeds = [cfg.seed + k for k in range(num_models)]
    kwargs = {"temperature": temperature} if method == "mat" else {}
    if model_factory is not None:
        if batched:
            raise ConfigError("batched half-models are memaware's heads; a model_factory trains one model at a time")
        if model_kwargs:
            raise ConfigError("model_kwargs build memaware's heads; with a model_factory the network is the caller's")
        halves = [_subset(data, masks[k]) for k in range(num_models)]
        results = fit_own_models(halves, method, cfg, seeds, model_factory, progress, **kwargs)
        return torch.stack([true_label_prob(r.predict_logits(x), y) for r in results]), masks
    # full batch: every half-model steps together, each on its own half (engine's batched mode)
    can_batch = cfg.batch_size == 0
    if batched is None:
        batched = can_batch
    if batched and not can_batch:
        raise ConfigError("batched half-models train full batch; use batch_size=0 (or batched=False)")
    if batched:
        results = train_subset_models(data, method, masks, cfg, seeds, model_kwargs, progress, **kwargs)
    else:
        results = [
            fit(_subset(data, masks[k]), method, dataclasses.replace(cfg, seed=seeds[k], progress=False),
                model_kwargs=model_kwargs, **kwargs)
            for k in tqdm(range(num_models), desc=f"{method} half-models", disable=not progress, leave=False)
        ]  # fmt: skip
    return torch.stack([true_label_prob(r.predict_logits(x), y) for r in results]), masks


def subsample_scores(
    data: GroupData,
    method: str = "erm",
    config: TrainConfig | None = None,
    num_models: int = 32,
    model_kwargs: dict[str, Any] | None = None,
    temperature: float = 0.1,
    batched: bool | None = None,
    progress: bool = False,
    model_factory: ModelFactory | None = None,
) -> MemorizationScores:
    """Held-in minus held-out memorization scores (n_train,) with per-example standard errors (module doc).
    ``model_factory``: the caller's network, trained end to end (``subsample_probs``)."""
    t0 = time.perf_counter()
    probs, masks = subsample_probs(data, method, config, num_models, model_kwargs, temperature, batched, progress,
                                   model_factory)  # fmt: skip
    st = held_in_minus_out(probs, masks)
    cfg = config or TrainConfig(selection="last")
    trained = own_model_params(cfg, model_factory) if model_factory is not None else _train_params(cfg, model_kwargs)
    params = {"num_models": num_models, "subset_fraction": 0.5, "design": "complementary random halves",
              **trained, **({"temperature": temperature} if method == "mat" else {})}
    return MemorizationScores("subsample", method, st["score"], se=st["se"],
                              extra={"p_held_in": st["p_in"], "p_held_out": st["p_out"]}, params=params,
                              seconds=time.perf_counter() - t0)


def _train_params(cfg: TrainConfig, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    mk = model_kwargs or {}
    return {"epochs": cfg.epochs, "lr": cfg.lr, "optimizer": cfg.optimizer, "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size, "seed": cfg.seed,
            "hidden": list(mk.get("hidden", ())), "bias": bool(mk.get("bias", False))}
