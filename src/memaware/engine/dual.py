"""Full-batch SGD of a linear model in its dual (Gram) form: the same iterates for a fraction of the memory traffic.

For f(x) = W x (no bias) trained by full-batch SGD with L2 weight decay, every update is
W <- (1 - lr wd) W - lr G^T X with G = dL/d(logits) (n, HK), so W_t = s_t W_0 + C_t^T X stays in W_0 plus the row
span of the training inputs (paper eq. 9-10: w = X^T alpha). The training logits then follow
L <- (1 - lr wd) L - lr K G with the Gram matrix K = X X^T (n x n): one (HK x n) @ (n x n) product per step instead
of a forward (n x d) and a backward (d x n) pass over X. When n is well below d (Fig. 1: n = 1000, d = 1800) this
is several times faster; the loss, label bookkeeping and history are untouched, because a method only ever sees
logits. Weights are materialised (W = s W_0 + C^T X) only when someone needs them.
"""

from __future__ import annotations

import torch

from ..models import MultiHeadNet


class DualSGD:
    """Steps a linear ``MultiHeadNet`` on the fixed full training batch ``x`` (n, d) through the Gram matrix."""

    def __init__(self, model: MultiHeadNet, x: torch.Tensor, lr: float, weight_decay: float):
        self.model, self.x, self.lr, self.wd = model, x, lr, weight_decay
        self.w0 = model.heads.linear.weight.detach().clone()  # (HK, d)
        self.gram = x @ x.t()  # (n, n), symmetric
        self.logits = x @ self.w0.t()  # (n, HK), exact for the current weights
        self.coef = torch.zeros_like(self.logits)  # C: W = s W0 + C^T X
        self.scale = 1.0  # s
        self.shape = (x.shape[0], model.heads.num_heads, model.heads.num_classes)

    @staticmethod
    def applicable(model: torch.nn.Module, n: int, d: int, cfg) -> bool:
        """Linear heads without bias, plain full-batch SGD, and a Gram matrix cheaper than two passes over X."""
        return (
            isinstance(model, MultiHeadNet)
            and not list(model.backbone.parameters())
            and model.heads.linear.bias is None
            and cfg.optimizer == "sgd"
            and cfg.momentum == 0
            and (cfg.batch_size == 0 or cfg.batch_size >= n)
            and n <= 4096  # the Gram matrix stays under 64 MB
            and n < d
        )

    def leaf_logits(self) -> torch.Tensor:
        """The current training logits (n, H, K) as a fresh leaf whose gradient the loss fills."""
        return self.logits.view(self.shape).detach().requires_grad_(True)

    @torch.no_grad()
    def step(self, leaf: torch.Tensor) -> None:
        """One SGD step from the gradient the loss left on ``leaf``."""
        g = leaf.grad.reshape(self.logits.shape)  # (n, HK)
        decay = 1.0 - self.lr * self.wd
        self.scale *= decay
        self.coef.mul_(decay).sub_(g, alpha=self.lr)
        # a new tensor, not in place: the leaf handed to the method shares storage and must stay pre-step
        self.logits = self.logits * decay - self.lr * (g.t() @ self.gram).t()  # K G = (G^T K)^T, K symmetric

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        """Everything the iterates depend on besides X (the Gram matrix is recomputed from X identically)."""
        return {"w0": self.w0.clone(), "logits": self.logits.clone(), "coef": self.coef.clone(), "scale": self.scale}

    def load_state_dict(self, state: dict[str, torch.Tensor | float]) -> None:
        """Continues exactly where ``state_dict`` was taken (checkpoint resume)."""
        self.w0, self.logits = state["w0"].clone(), state["logits"].clone()
        self.coef, self.scale = state["coef"].clone(), float(state["scale"])

    def state(self) -> tuple[float, torch.Tensor]:
        """A snapshot (s, C) of the weights, cheap to keep per epoch."""
        return self.scale, self.coef.clone()

    @torch.no_grad()
    def snapshot_logits(self, x_eval: torch.Tensor, states: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
        """Logits (T, n_eval, HK) of T snapshots on ``x_eval``: s_t x W0^T + (x X^T) C_t, in one GEMM."""
        base = x_eval @ self.w0.t()  # (m, HK)
        cross = x_eval @ self.x.t()  # (m, n)
        coefs = torch.stack([c for _, c in states], dim=1)  # (n, T, HK)
        out = (cross @ coefs.flatten(1)).view(len(x_eval), len(states), -1).transpose(0, 1)
        scales = torch.tensor([s for s, _ in states], dtype=out.dtype, device=out.device)
        return out + scales.view(-1, 1, 1) * base

    @torch.no_grad()
    def materialize(self) -> None:
        """Writes W = s W0 + C^T X into the model."""
        self.model.heads.linear.weight.copy_(self.scale * self.w0 + self.coef.t() @ self.x)
