"""Small optimisers with torch.optim's exact update rules.

Why not ``torch.optim``: constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (about 1.4 s on a
2-core machine), which is longer than a whole Fig. 1 run. These implementations follow torch's formulas
(SGD with coupled L2 weight decay and momentum; Adam with coupled L2; AdamW with decoupled decay) and are tested
against ``torch.optim`` in tests/test_methods.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class SGD:
    """p <- p - lr * b_t, b_t = momentum * b_{t-1} + (g + wd * p) (b_1 = g + wd * p), as torch.optim.SGD."""

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = d.clone()
                else:
                    buf.mul_(self.momentum).add_(d)
                d = buf
            p.add_(d, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"buffers": [None if b is None else b.clone() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = [None if b is None else b.clone() for b in state["buffers"]]


class Adam:
    """Adam (coupled L2 weight decay) or AdamW (``decoupled=True``), bias-corrected, as torch.optim."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
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
        # multi-tensor (foreach) kernels: a handful of launches per step instead of several per parameter
        if self.weight_decay:
            if self.decoupled:
                torch._foreach_mul_(params, 1 - self.lr * self.weight_decay)
            else:
                grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        denom = torch._foreach_div(v, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, value=-self.lr / bc1)

    def state_dict(self) -> dict:
        return {"t": self.t, "m": [x.clone() for x in self.m], "v": [x.clone() for x in self.v]}

    def load_state_dict(self, state: dict) -> None:
        self.t = state["t"]
        self.m = [x.clone() for x in state["m"]]
        self.v = [x.clone() for x in state["v"]]


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> SGD | Adam:
    """'sgd' | 'adam' | 'adamw' -> optimiser over ``params``."""
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, weight_decay=weight_decay)
    return Adam(params, lr, weight_decay=weight_decay, decoupled=(name == "adamw"))
