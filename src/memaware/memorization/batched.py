"""Batched full-batch training of K linear heads on shared features, each on its own subset of the training set.

Model k of the batch is trained on the examples with ``masks[k, i]`` true, with the same updates as
``memaware.train.fit`` on that subset with seed ``seeds[k]`` (same initial weights, same optimiser, same
XRM halves and label flips from a per-model generator): the K models cost one (n, d) x (d, K * C) product
for the logits and one for the gradient per step, instead of K training loops. Supported: ERM, XRM and
two-phase MAT (XRM on S_k, then f_k with the shift computed from S_k's own held-out logits).

Gradients are written by hand: for cross-entropy on logits z (+ shift s), dL/dz_i = w_i (softmax(z_i + s_i) -
e_{y_i}), with w_i = [i in S_k] / |S_k| for ERM/MAT and [i held in by the head] / (count of i's current label
in S_k) for XRM's class-balanced loss; dL/dW_k = (dL/dZ_k)^T X.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..methods.mat import mat_log_shift
from ..methods.xrm import flip_probability, random_halves
from ..models import MultiHeadNet, build_model
from ..optim import make_optimizer
from ..train import TrainConfig


@dataclass
class BatchedHeads:
    """K trained linear heads: ``weight`` (K, C, d), ``bias`` (K, C) or None; for MAT also ``shift`` (K, n, C),
    the training-loss logit shift of model k on every training example (zero where i is not in S_k)."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    shift: torch.Tensor | None = None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (K, n, C) logits of every model (the predictor f alone: no shift)."""
        k, c, d = self.weight.shape
        z = x @ self.weight.reshape(k * c, d).t()
        if self.bias is not None:
            z = z + self.bias.reshape(-1)
        return z.view(len(x), k, c).transpose(0, 1)

    def to_models(self) -> list[MultiHeadNet]:
        """One single-head ``MultiHeadNet`` per model, holding its trained weights."""
        k, c, d = self.weight.shape
        out = []
        for j in range(k):
            m = MultiHeadNet(d, c, 1, bias=self.bias is not None)
            with torch.no_grad():
                m.heads.linear.weight.copy_(self.weight[j])
                if self.bias is not None:
                    m.heads.linear.bias.copy_(self.bias[j])
            out.append(m.eval())
        return out


def init_heads(
    dim: int, num_classes: int, num_heads: int, seeds: Sequence[int], bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Initial weights (K, H * C, d) and biases (K, H * C) exactly as ``build_model(..., seed=seeds[k])``."""
    heads = [build_model(dim, num_classes, num_heads, bias=bias, seed=int(s)).heads.linear for s in seeds]
    w = torch.stack([h.weight.detach() for h in heads])
    b = torch.stack([h.bias.detach() for h in heads]) if bias else None
    return w, b


def _descend(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    grad_logits: Callable[[torch.Tensor], torch.Tensor],
    cfg: TrainConfig,
    after_step: Callable[[torch.Tensor], None] | None = None,
    num_classes: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``cfg.epochs`` full-batch steps of all K models: z = X W_k^T (+ b_k) in one GEMM, (n, K, R).

    Two classes: softmax depends only on z_1 - z_0 and dL/dz_0 = -dL/dz_1, so one GEMM column per head gives
    the logits (0, z_1 - z_0) and the gradients of both rows: half the work of the general case.
    """
    n, d = x.shape
    k, r, _ = weight.shape
    binary = num_classes == 2
    weight = weight.clone().requires_grad_(True)
    params = [weight]
    if bias is not None:
        bias = bias.clone().requires_grad_(True)
        params.append(bias)
    # the library's optimisers are elementwise, so one step on the stacked (K, R, d) tensor is K model steps
    opt = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.momentum, cfg.weight_decay)
    zbuf = torch.zeros(n, k, r)  # binary case: column 0 of each head stays 0
    gbuf = torch.empty(k, r, d)
    with torch.no_grad():
        for _ in range(cfg.epochs):
            if binary:
                wd = (weight[:, 1::2] - weight[:, 0::2]).reshape(-1, d)
                zd = x @ wd.t()
                if bias is not None:
                    zd += (bias[:, 1::2] - bias[:, 0::2]).reshape(-1)
                z = zbuf
                z[..., 1::2] = zd.view(n, k, r // 2)
            else:
                z = x @ weight.view(k * r, d).t()
                if bias is not None:
                    z += bias.view(-1)
                z = z.view(n, k, r)
            gz = grad_logits(z)
            if binary:
                g1 = gz[..., 1::2].reshape(n, -1)
                gw1 = (g1.t() @ x).view(k, r // 2, d)
                gbuf[:, 1::2] = gw1
                torch.neg(gw1, out=gbuf[:, 0::2])
                weight.grad = gbuf
            else:
                weight.grad = (gz.reshape(n, k * r).t() @ x).view(k, r, d)
            if bias is not None:
                bias.grad = gz.sum(0)
            opt.step()
            if after_step is not None:
                after_step(z)  # pre-step logits, as fit's after_step sees them
    return weight.detach(), None if bias is None else bias.detach()


def _check(x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig, seeds: Sequence[int]) -> None:
    if cfg.batch_size != 0:
        raise ConfigError(f"batched head training is full-batch; use batch_size=0, got {cfg.batch_size}")
    if masks.shape != (len(seeds), len(y)) or x.shape[0] != len(y):
        raise ConfigError(f"masks must have shape (K, n) = ({len(seeds)}, {len(y)}), got {tuple(masks.shape)}")
    if not masks.any(dim=1).all():
        raise ConfigError("every batched model needs at least one held-in example")


def _ce_grad(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """dL/dz for sum_i weights[i, k] CE(z[i, k] + shift[i, k], y_i): (n, K, C)."""
    n, k, _ = z.shape
    p = (z if shift is None else z + shift).softmax(dim=-1)
    p.scatter_add_(-1, y.view(n, 1, 1).expand(n, k, 1), torch.full((n, k, 1), -1.0, dtype=p.dtype))
    return p.mul_(weights.unsqueeze(-1))


def train_erm(
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainConfig,
    seeds: Sequence[int],
    num_classes: int,
    bias: bool = False,
    shift: torch.Tensor | None = None,
) -> BatchedHeads:
    """K heads trained by mean CE over their held-in examples; ``shift`` (n, K, C) makes it MAT's phase 2."""
    _check(x, y, masks, cfg, seeds)
    w0, b0 = init_heads(x.shape[1], num_classes, 1, seeds, bias)
    maskf = masks.t().float()  # (n, K)
    weights = maskf / maskf.sum(0, keepdim=True)
    w, b = _descend(x, w0, b0, lambda z: _ce_grad(z, y, weights, shift), cfg, num_classes=num_classes)
    return BatchedHeads(w, b, None if shift is None else shift.transpose(0, 1).contiguous())


def train_xrm(
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainConfig,
    seeds: Sequence[int],
    num_classes: int,
    bias: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """XRM on each S_k. Returns (held-out logits (K, n, C), flipped fraction (K,)); logits outside S_k are 0."""
    _check(x, y, masks, cfg, seeds)
    n, c = len(y), num_classes
    k = len(seeds)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    members = [torch.nonzero(m).squeeze(1) for m in masks]
    half = torch.zeros(k, n, dtype=torch.long)  # which twin holds example i in, per model
    for j, mem in enumerate(members):
        half[j, mem] = random_halves(len(mem), gens[j])
    labels = y.expand(k, n).clone()  # XRM's dynamic (flipped) labels
    maskf = masks.float()
    held_in = (F.one_hot(half, 2).float() * maskf.unsqueeze(-1)).transpose(0, 1)  # (n, K, 2)
    ho_index = (1 - half).t().reshape(n, k, 1, 1).expand(n, k, 1, c)

    def grad_logits(z: torch.Tensor) -> torch.Tensor:
        z = z.view(n, k, 2, c)
        p = z.softmax(dim=-1)
        lab = labels.t()
        p.scatter_add_(-1, lab.reshape(n, k, 1, 1).expand(n, k, 2, 1), torch.full((n, k, 2, 1), -1.0))
        # class-balanced CE: each class's mean over S_k (both twins), summed over classes
        counts = (F.one_hot(labels, c).float() * maskf.unsqueeze(-1)).sum(1).clamp_min(1.0)  # (K, C)
        w = maskf / counts.gather(1, labels)  # (K, n)
        return p.mul_((held_in * w.t().unsqueeze(-1)).unsqueeze(-1)).view(n, k, 2 * c)

    def heldout(z: torch.Tensor) -> torch.Tensor:
        return z.view(n, k, 2, c).gather(2, ho_index).squeeze(2)  # (n, K, C)

    def flip(z: torch.Tensor) -> None:
        p_max, y_ho = heldout(z).softmax(dim=-1).max(dim=-1)  # (n, K)
        u = torch.ones(k, n)  # u = 1 never flips
        for j, mem in enumerate(members):
            u[j, mem] = torch.rand(len(mem), generator=gens[j])
        do = (u < flip_probability(p_max, c).t()) & masks
        labels.copy_(torch.where(do, y_ho.t(), labels))

    w0, b0 = init_heads(x.shape[1], c, 2, seeds, bias)
    w, b = _descend(x, w0, b0, grad_logits, cfg, after_step=flip, num_classes=c)
    z = x @ w.reshape(-1, x.shape[1]).t()
    if b is not None:
        z += b.reshape(-1)
    ho = heldout(z.view(n, k, 2 * c)).transpose(0, 1) * maskf.unsqueeze(-1)
    flipped = ((labels != y) & masks).float().sum(1) / maskf.sum(1)
    return ho.contiguous(), flipped


def train_mat(
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainConfig,
    seeds: Sequence[int],
    num_classes: int,
    bias: bool = False,
    temperature: float = 0.1,
) -> BatchedHeads:
    """Two-phase MAT on each S_k: XRM on S_k, the shift from S_k's held-out logits (p(y | yho) over S_k only),
    then f_k by CE(f_k(x_i) + shift_ki, y_i) over S_k. Predictions use f_k alone."""
    if temperature <= 0:
        raise ConfigError(f"MAT temperature must be > 0, got {temperature}")
    ho, _ = train_xrm(x, y, masks, cfg, seeds, num_classes, bias)
    shift = torch.zeros(len(y), len(seeds), num_classes)
    for j, m in enumerate(masks):
        mem = torch.nonzero(m).squeeze(1)
        shift[mem, j] = mat_log_shift(ho[j, mem], y[mem], temperature, num_classes)
    return train_erm(x, y, masks, cfg, seeds, num_classes, bias, shift=shift)


def train_erm_stacked(
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainConfig,
    seeds: Sequence[int],
    num_classes: int,
    model_kwargs: dict | None = None,
) -> list[MultiHeadNet]:
    """ERM for any ``MultiHeadNet`` (e.g. an MLP), K copies at once: parameters stacked with
    ``torch.func.stack_module_state`` and one ``vmap``-ed forward; loss sum_k mean_{i in S_k} CE. Model k equals
    ``fit`` on S_k with seed ``seeds[k]`` (same init, same elementwise optimiser updates)."""
    from torch.func import functional_call, stack_module_state, vmap

    _check(x, y, masks, cfg, seeds)
    models = [build_model(x.shape[1], num_classes, 1, seed=int(s), **(model_kwargs or {})) for s in seeds]
    params, buffers = stack_module_state(models)
    opt = make_optimizer(cfg.optimizer, list(params.values()), cfg.lr, cfg.momentum, cfg.weight_decay)
    weights = masks.float() / masks.float().sum(1, keepdim=True)  # (K, n)

    def forward(p: dict, b: dict) -> torch.Tensor:
        return functional_call(models[0], (p, b), (x,))[:, 0]

    batched = vmap(forward)
    for _ in range(cfg.epochs):
        logits = batched(params, buffers)  # (K, n, C)
        ce = F.cross_entropy(logits.reshape(-1, num_classes), y.repeat(len(seeds)), reduction="none")
        loss = (ce.view(len(seeds), -1) * weights).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for j, m in enumerate(models):
            for name, p in m.named_parameters():
                p.copy_(params[name][j])
    return [m.eval() for m in models]


def train_heads(
    method: str,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainConfig,
    seeds: Sequence[int],
    num_classes: int,
    bias: bool = False,
    temperature: float = 0.1,
) -> BatchedHeads:
    """'erm' or 'mat' (two-phase) heads on the subsets ``masks`` (K, n) bool."""
    if method == "erm":
        return train_erm(x, y, masks, cfg, seeds, num_classes, bias)
    if method == "mat":
        return train_mat(x, y, masks, cfg, seeds, num_classes, bias, temperature)
    raise ConfigError(f"batched training supports 'erm' and 'mat', got '{method}'")
