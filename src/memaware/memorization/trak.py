"""``trak``: the TRAK self-influence diagonal (Park et al. 2023), natively in torch.

For each of M trained models (seeds or checkpoints), with f_i(theta) = log p(y_i|x_i) / (1 - p(y_i|x_i)) the
margin output function (z_y - logsumexp_{c != y} z_c) and p~_i the training loss's probability of y_i:

    g_i   = grad_theta f_i(theta)              per-example gradients, torch.func.vmap(grad(.)), optionally only
                                               w.r.t. a parameter subset (e.g. the last layer, ``params='head'``)
    phi_i = P^T g_i,  P (p, k) ~ N(0, 1/k)     seeded Gaussian projection, generated in row blocks and cached
    A     = Phi^T Phi + lambda I               (k, k), solved by Cholesky in float64
    h_i   = phi_i^T A^-1 phi_i                 the diagonal only: rowsum(Phi * (A^-1 Phi^T)^T), never n x n
    Q_i   = 1 - p~_i                           the out-to-loss weight (d loss / d margin)

    tau_ii = mean_m h_i^(m) * mean_m Q_i^(m)       (TRAK averages the two factors over models separately)

tau_ii estimates the drop of example i's margin when i is left out (eq. 8 with j = i on the margin scale);
it lies in [0, 1] (h is a leverage, Q a probability). With lambda = 0 the kernel must be invertible: k must be
below the rank of the projected gradients (<= min(n, p)); at k >= rank every h_i would be 1 and tau_ii would
collapse to 1 - p~_i, so that case is refused. For MAT the training-side gradients (Phi, A, Q) use the shifted
logits f(x) + s_i of its loss and the target side (phi_i of the margin whose change is measured) f(x) alone;
for two classes both gradients coincide.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.groups import GroupData
from ..engine import TrainConfig
from ..errors import ConfigError
from .fitting import ScoredModel, check_config, model_device, train_full_models
from .own_model import ModelFactory, own_model_params
from .scores import MemorizationScores, train_arrays, true_label_prob

BLOCK_ROWS = 1 << 16
_CACHE: OrderedDict[tuple[int, int, int, int], torch.Tensor] = OrderedDict()
_CACHE_BYTES = 256 << 20
GRAD_FLOATS = 1 << 26  # per-example gradient entries held at once (256 MiB of float32)


def projection_block(p: int, k: int, seed: int, block: int) -> torch.Tensor:
    """Rows [block * 65536, ...) of the (p, k) projection N(0, 1/k) for ``seed``: deterministic and cached."""
    key = (p, k, seed, block)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    rows = min(BLOCK_ROWS, p - block * BLOCK_ROWS)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + block)
    mat = torch.randn(rows, k, generator=g) / k**0.5
    _CACHE[key] = mat
    while sum(m.numel() * 4 for m in _CACHE.values()) > _CACHE_BYTES and len(_CACHE) > 1:
        _CACHE.popitem(last=False)
    return mat


def project(grads: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """(b, p) -> (b, k) float64: grads @ P with P the seeded projection (module doc)."""
    p = grads.shape[1]
    out = torch.zeros(grads.shape[0], k)
    for j in range(0, (p + BLOCK_ROWS - 1) // BLOCK_ROWS):
        out += grads[:, j * BLOCK_ROWS : (j + 1) * BLOCK_ROWS] @ projection_block(p, k, seed, j)
    return out.double()


def select_params(model: nn.Module, params: str | Sequence[str] = "all") -> list[str]:
    """Names of the parameters to differentiate: 'all', 'head' (``heads.*``, the last layer) or name prefixes."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if params == "all":
        return names
    prefixes = ["heads."] if params == "head" else [params] if isinstance(params, str) else list(params)
    chosen = [n for n in names if any(n == q or n.startswith(q.rstrip(".") + ".") for q in prefixes)]
    if not chosen:
        raise ConfigError(f"trak: no parameter matches {prefixes}; the model has {', '.join(names)}")
    return chosen


class _OnLoaded(nn.Module):
    """An ``EndToEndNet``'s backbone and heads on an already loaded batch (the same parameter names): the row
    indices of x are turned into images / texts once, outside the per-example gradients."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.backbone, self.heads = net.backbone, net.heads

    def forward(self, batch: Any) -> torch.Tensor:
        return self.heads(self.backbone(batch))


def _network_input(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, Any]:
    """(the module to differentiate, its input for rows x): an ``EndToEndNet`` over a dataset loads x's rows."""
    dataset = getattr(model, "dataset", None)
    if dataset is None or not hasattr(model, "backbone") or not hasattr(model, "heads"):
        return model, x.to(model_device(model))
    from ..models.backbones import batch_to

    rows = x.detach()[:, 0].round().long().cpu()
    return _OnLoaded(model), batch_to(dataset.load(rows), model_device(model))


def _one(batch: Any, i: int | None = None) -> Any:
    """Example i of a batch (tensor rows, dict of tensors, list of strings), or example xi as a batch of one."""
    if i is not None:
        return {k: v[i] for k, v in batch.items()} if isinstance(batch, dict) else batch[i]
    if isinstance(batch, dict):
        return {k: v.unsqueeze(0) for k, v in batch.items()}
    return batch.unsqueeze(0) if isinstance(batch, torch.Tensor) else [batch]


def margin_grads(
    sm: ScoredModel, x: torch.Tensor, y: torch.Tensor, names: list[str], shift: torch.Tensor | None
) -> torch.Tensor:
    """(b, p) per-example gradients of the margin z_y - logsumexp_{c != y} z_c (z = logits + shift), on the CPU.
    vmap over the examples; a network vmap cannot batch (or a batch of strings) is differentiated example by
    example, with the same result."""
    from torch.func import functional_call, grad, vmap

    model, inputs = _network_input(sm.model, x)
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    frozen.update(dict(model.named_buffers()))
    theta = {n: p.detach() for n, p in model.named_parameters() if n in names}
    dev = model_device(model)
    y = y.to(dev)
    s = (torch.zeros(len(y), 1) if shift is None else shift).to(dev)

    def margin(th: dict[str, torch.Tensor], xi: Any, yi: torch.Tensor, si: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**th, **frozen}, (_one(xi),))
        z = (out[0, sm.head] if out.dim() == 3 else out[0]) + si
        own = torch.arange(z.shape[0], device=z.device) == yi
        return (z * own).sum() - z.masked_fill(own, float("-inf")).logsumexp(0)

    g = None
    if isinstance(inputs, torch.Tensor | dict):
        try:
            g = vmap(grad(margin), in_dims=(None, 0, 0, 0))(theta, inputs, y, s)
        except Exception:  # e.g. a data-dependent branch in the caller's network: one example at a time below
            g = None  # a genuine error in the network is raised again by the loop
    if g is None:
        each = [grad(margin)(theta, _one(inputs, i), y[i], s[i]) for i in range(len(y))]
        g = {n: torch.stack([e[n] for e in each]) for n in names}
    return torch.cat([g[n].reshape(len(y), -1) for n in names], dim=1).cpu()


def self_influence(
    models: Sequence[ScoredModel],
    x: torch.Tensor,
    y: torch.Tensor,
    proj_dim: int | None = None,
    lam: float = 0.0,
    params: str | Sequence[str] = "all",
    seed: int = 0,
    chunk: int = 1024,
) -> dict[str, np.ndarray]:
    """TRAK diagonal (module doc) for training examples x (n, d), y (n,). ``proj_dim`` None: min(512,
    min(n, p) // 2). Returns numpy arrays (n,): score (tau_ii), leverage (mean_m h_i), q (mean_m Q_i),
    p_true (mean_m p(y_i|x_i) of the predictor), and the proj_dim used."""
    n = len(y)
    if proj_dim is None:
        p0 = sum(dict(models[0].model.named_parameters())[nm].numel() for nm in select_params(models[0].model, params))
        proj_dim = max(1, min(512, min(n, p0) // 2))
    if proj_dim < 1:
        raise ConfigError(f"trak: proj_dim must be >= 1, got {proj_dim}")
    if lam < 0:
        raise ConfigError(f"trak: lambda must be >= 0, got {lam}")
    lev, q, p_true = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), torch.zeros(n)
    for sm in models:
        names = select_params(sm.model, params)
        p_dim = sum(dict(sm.model.named_parameters())[nm].numel() for nm in names)
        if lam == 0 and proj_dim >= min(n, p_dim):
            raise ConfigError(
                f"trak: with lambda = 0, proj_dim k = {proj_dim} must be below the rank of the projected gradients "
                f"(<= min(n = {n}, p = {p_dim})); at k >= rank every score collapses to 1 - p. Lower --proj-dim "
                "or set --trak-lambda > 0"
            )
        two_sided = sm.shift is not None and sm.shift.shape[1] > 2  # for 2 classes the shift cancels in the margin
        phi, phi_t = [], []
        if chunk * p_dim > GRAD_FLOATS:  # a large network: at most GRAD_FLOATS per-example gradient entries at once
            chunk = max(1, GRAD_FLOATS // p_dim)
        for s in range(0, n, chunk):
            xb, yb = x[s : s + chunk], y[s : s + chunk]
            shb = None if sm.shift is None else sm.shift[s : s + chunk]
            phi.append(project(margin_grads(sm, xb, yb, names, shb), proj_dim, seed))
            if two_sided:
                phi_t.append(project(margin_grads(sm, xb, yb, names, None), proj_dim, seed))
        phi_m = torch.cat(phi)
        phi_tm = torch.cat(phi_t) if two_sided else phi_m
        a = phi_m.t() @ phi_m
        if lam == 0:
            ev = torch.linalg.eigvalsh(a)
            rank = int((ev > ev[-1] * 1e-10).sum())
            if rank < proj_dim:
                raise ConfigError(
                    f"trak: with lambda = 0 the kernel Phi^T Phi is singular: proj_dim k = {proj_dim} >= its rank "
                    f"{rank}; lower --proj-dim below {rank} or set --trak-lambda > 0"
                )
        a.diagonal().add_(lam)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info):
            raise ConfigError("trak: the kernel Phi^T Phi + lambda I is not positive definite; raise --trak-lambda")
        lev += (phi_tm * torch.cholesky_solve(phi_m.t(), chol).t()).sum(1)
        logits = sm.logits(x)
        p_train = true_label_prob(logits if sm.shift is None else logits + sm.shift, y)
        q += 1.0 - p_train.double()
        p_true += true_label_prob(logits, y)
    m = len(models)
    lev, q = lev / m, q / m
    return {"score": (lev * q).numpy(), "leverage": lev.numpy(), "q": q.numpy(), "p_true": (p_true / m).numpy(),
            "proj_dim": proj_dim}


def trak_scores(
    data: GroupData,
    method: str = "erm",
    config: TrainConfig | None = None,
    num_models: int = 5,
    model_kwargs: dict[str, Any] | None = None,
    temperature: float = 0.1,
    proj_dim: int | None = None,
    lam: float = 0.0,
    params: str | Sequence[str] = "all",
    models: Sequence[ScoredModel] | None = None,
    model_factory: ModelFactory | None = None,
    trained_with: dict[str, Any] | None = None,
) -> MemorizationScores:
    """Trains ``num_models`` models of ``method`` on the training split (seeds config.seed + m; memaware's heads
    built with ``model_kwargs``, or the caller's network from ``model_factory`` trained end to end) and returns
    their TRAK self-influence scores (n_train,).

    With ``models`` (trained by the caller) nothing is trained: ``config`` only seeds the projection, and the record
    says "trained by the caller" plus whatever ``trained_with`` holds (the caller's own settings), never
    memaware's training defaults."""
    t0 = time.perf_counter()
    cfg = check_config(config)
    x, y = train_arrays(data)
    if models is not None and model_factory is not None:
        raise ConfigError("trak: give trained models or a model_factory to train them, not both")
    given = models is not None
    if models is None:
        models = train_full_models(data, method, cfg, num_models, model_kwargs, temperature, model_factory)
    st = self_influence(models, x, y, proj_dim, lam, params, seed=cfg.seed)
    params_out = {"num_models": len(models), "proj_dim": st["proj_dim"], "lambda": lam, "params": params,
                  "projection": "Gaussian N(0, 1/k), seeded", "projection_seed": cfg.seed}
    if given:
        params_out.update({"training": "trained by the caller", **dict(trained_with or {})})
    else:
        mk = model_kwargs or {}
        params_out.update(
            own_model_params(cfg, model_factory) if model_factory is not None else
            {"epochs": cfg.epochs, "lr": cfg.lr, "optimizer": cfg.optimizer, "weight_decay": cfg.weight_decay,
             "seed": cfg.seed, "hidden": list(mk.get("hidden", ())), "bias": bool(mk.get("bias", False))}
        )  # fmt: skip
        if method == "mat":
            params_out["temperature"] = temperature
    return MemorizationScores("trak", method, st["score"], p_true=st["p_true"],
                              extra={"leverage": st["leverage"], "q": st["q"]}, params=params_out,
                              seconds=time.perf_counter() - t0)
