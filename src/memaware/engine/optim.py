"""Small optimisers with torch.optim's exact update rules, for one model or for many members at once.

Why not ``torch.optim``: constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (about 1.4 s on a
2-core machine), which is longer than a whole Fig. 1 run. These implementations follow torch's formulas
(SGD with coupled L2 weight decay and momentum; Adam with coupled L2; AdamW with decoupled decay) and are tested
against ``torch.optim`` in tests/test_methods.py and tests/test_vectorized.py.

Every hyper-parameter (``lr``, ``momentum``, ``weight_decay``) is a Python number (one run: ``engine.fit``) or a
tensor that broadcasts against every parameter (many runs at once: ``memaware.engine.many`` passes one flat
parameter and per-element float64 tensors, so each member has its own lr / momentum / decay). The rules below are
written once for both; only the arithmetic primitive differs (``alpha=`` scalars vs tensor products), so a
member's update equals the update of the same run alone up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..lazy import no_grad

Hyper = float | torch.Tensor


class _Hypers:
    """A tensor hyper-parameter's per-dtype copies and zero test, recomputed only when it changes in place (the
    batched mode sets a finished member's lr to 0): the step stays a handful of kernels."""

    def __init__(self) -> None:
        self.cache: dict[tuple, tuple[int, Any]] = {}

    def _cached(self, h: torch.Tensor, key: tuple, make: Callable[[], Any]) -> Any:
        hit = self.cache.get((id(h), *key))
        if hit is None or hit[0] != h._version:
            hit = (h._version, make())
            self.cache[(id(h), *key)] = hit
        return hit[1]

    def is_zero(self, h: Hyper) -> bool:
        """0 everywhere (its term is skipped, as torch.optim does for 0)."""
        if not isinstance(h, torch.Tensor):
            return h == 0
        return self._cached(h, ("zero",), lambda: not bool(h.any()))

    def like(self, h: Hyper, p: torch.Tensor) -> Hyper:
        """A tensor hyper-parameter in the parameter's dtype and device (kept in float64, rounded once, as a Python
        float is when a kernel takes it as a scalar); numbers pass through."""
        if not isinstance(h, torch.Tensor):
            return h
        return self._cached(h, (p.dtype, p.device), lambda: h.to(p.device, p.dtype))

    def add_scaled(self, y: torch.Tensor, x: torch.Tensor, a: Hyper, sign: float = 1.0) -> torch.Tensor:
        """y + sign a x (a new tensor)."""
        if isinstance(a, torch.Tensor):
            return torch.addcmul(y, self.like(a, y), x, value=sign)
        return y.add(x, alpha=sign * a)

    def add_scaled_(self, y: torch.Tensor, x: torch.Tensor, a: Hyper, sign: float = 1.0) -> torch.Tensor:
        """y <- y + sign a x (in place)."""
        if isinstance(a, torch.Tensor):
            return y.addcmul_(self.like(a, y), x, value=sign)
        return y.add_(x, alpha=sign * a)


class SGD:
    """p <- p - lr * b_t, b_t = momentum * b_{t-1} + (g + wd * p) (b_1 = g + wd * p), as torch.optim.SGD."""

    def __init__(self, params: Iterable[torch.Tensor], lr: Hyper, momentum: Hyper = 0.0, weight_decay: Hyper = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)
        self.h = _Hypers()

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @no_grad
    def step(self) -> None:
        h = self.h
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad if h.is_zero(self.weight_decay) else h.add_scaled(p.grad, p, self.weight_decay)
            if not h.is_zero(self.momentum):
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = d.clone()
                else:
                    buf.mul_(h.like(self.momentum, buf)).add_(d)
                d = buf
            h.add_scaled_(p, d, self.lr, sign=-1.0)

    def state_dict(self) -> dict:
        return {"buffers": [None if b is None else b.clone() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = [None if b is None else b.clone() for b in state["buffers"]]


class Adam:
    """Adam (coupled L2 weight decay) or AdamW (``decoupled=True``), bias-corrected, as torch.optim."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: Hyper,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Hyper = 0.0,
        decoupled: bool = False,
    ):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.denom = [torch.empty_like(p) for p in self.params]  # CPU scratch, reused every step (not state)
        self.h = _Hypers()

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @no_grad
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        m, v = [self.m[i] for i in live], [self.v[i] for i in live]
        if not params:
            return
        lr, wd, h = self.lr, self.weight_decay, self.h
        # multi-tensor (foreach) kernels: a handful of launches per step instead of several per parameter
        if not h.is_zero(wd):
            if self.decoupled:  # p <- p (1 - lr wd)
                decay = 1 - lr * wd
                if isinstance(decay, torch.Tensor):
                    torch._foreach_mul_(params, [decay.to(p.device, p.dtype) for p in params])
                else:
                    torch._foreach_mul_(params, decay)
            else:  # g <- g + wd p
                grads = [h.add_scaled(g, p, wd) for g, p in zip(grads, params, strict=True)]
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        if v[0].device.type == "cpu":  # what _foreach_div does there (a div per tensor), into reused buffers
            denom = [self.denom[i] for i in live]
            for vi, di in zip(v, denom, strict=True):
                torch.div(vi, bc2, out=di)
        else:  # one fused kernel for every tensor
            denom = torch._foreach_div(v, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        # p <- p - (lr / bc1) m / denom; a tensor lr divides in float64 and rounds once, as the scalar does
        step = lr / bc1
        if isinstance(step, torch.Tensor):
            for p, mi, di in zip(params, m, denom, strict=True):
                p.sub_(torch.mul(mi, step.to(p.device, p.dtype)).div_(di))  # (step m) / denom: addcdiv's order
        else:
            torch._foreach_addcdiv_(params, m, denom, value=-step)

    def state_dict(self) -> dict:
        return {"t": self.t, "m": [x.clone() for x in self.m], "v": [x.clone() for x in self.v]}

    def load_state_dict(self, state: dict) -> None:
        self.t = state["t"]
        self.m = [x.clone() for x in state["m"]]
        self.v = [x.clone() for x in state["v"]]


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: Hyper, momentum: Hyper = 0.0, weight_decay: Hyper = 0.0
) -> SGD | Adam:
    """'sgd' | 'adam' | 'adamw' -> optimiser over ``params``; hyper-parameters numbers or broadcastable tensors."""
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, weight_decay=weight_decay)
    return Adam(params, lr, weight_decay=weight_decay, decoupled=(name == "adamw"))
