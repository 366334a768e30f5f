"""S x M copies of one ``MultiHeadNet``, each parameter stacked over members: the batched mode's model.

PyTorch's model-ensembling recipe (``torch.func.stack_module_state`` + ``vmap`` over ``functional_call``), laid out
for the optimiser: parameter k of all S x M members is one leaf (S * M, size_k), so a step is a handful of ops and
a per-member hyper-parameter is a (S * M, 1) tensor that broadcasts against every leaf (``per_member``). A linear
head's logits are computed as W X^T and its gradient as dW = dZ^T X by hand (with few outputs per member,
(M P, d) x (d, b) GEMMs are several times faster on a CPU than (b, d) x (d, M P) ones, and autograd's bookkeeping
is a large share of such a step); any other network goes through ``vmap(functional_call)`` and autograd.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call, vmap

from ...models import MultiHeadNet

_EVAL_FLOATS = 1 << 24  # bound an evaluation chunk's (members x outputs x rows) to ~64 MB


class StackedNets:
    """``nets[s][j]`` (S x M ``MultiHeadNet``s of one architecture) stacked; logits are (S, M, H, K, b).

    Parameter k of every member lives in one leaf (S * M, size_k), row s * M + j for slot (s, j): a per-member
    hyper-parameter is a (S * M, 1) tensor that broadcasts against every leaf (``engine.optim`` takes it as is).
    """

    def __init__(self, nets: list[list[MultiHeadNet]], dtype: torch.dtype, device: torch.device):
        base = nets[0][0]
        self.S, self.M = len(nets), len(nets[0])
        self.num_heads, self.num_classes = base.heads.num_heads, base.heads.num_classes
        self.linear = not list(base.backbone.parameters())
        self.names = [name for name, _ in base.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in base.named_parameters()]
        members = [dict(net.named_parameters()) for row in nets for net in row]
        self.leaves = [
            torch.stack([m[name].detach().reshape(-1) for m in members]).to(device, dtype).requires_grad_(True)
            for name in self.names
        ]
        self.base = copy.deepcopy(base).to(device, dtype)  # functional_call's template (its weights go unused)
        self._views: dict[str, torch.Tensor] | None = None

    # ---- parameters --------------------------------------------------------------------------------------
    def params(self) -> dict[str, torch.Tensor]:
        """{name: (S, M, *shape)} views of the leaves: fresh ones where autograd records (it tracks them per step),
        else views made once (the optimiser updates the leaves in place)."""
        if not torch.is_grad_enabled():
            if self._views is None:
                self._views = self._split()
            return self._views
        return self._split()

    def _split(self) -> dict[str, torch.Tensor]:
        S, M = self.S, self.M
        return {n: v.view(S, M, *s) for n, v, s in zip(self.names, self.leaves, self.shapes, strict=True)}

    def per_member(self, values: torch.Tensor) -> torch.Tensor:
        """(S, M) per-slot values -> (S * M, 1), broadcasting against every leaf (same dtype as ``values``)."""
        return values.reshape(-1, 1).to(self.leaves[0].device)

    def state(self, s: int, j: int) -> dict[str, torch.Tensor]:
        """Slot (s, j)'s parameters as a ``MultiHeadNet`` state dict (detached copies on the CPU)."""
        row, parts = s * self.M + j, zip(self.names, self.leaves, self.shapes, strict=True)
        return {n: v[row].detach().view(sh).cpu().clone() for n, v, sh in parts}

    # ---- forward and backward ----------------------------------------------------------------------------
    def forward(self, xb: torch.Tensor | None, x: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (S, M, H, K, b) of gathered rows ``xb`` (S, b, d) (stream s's members see xb[s]) or of rows
        ``x`` (b, d) that every member sees."""
        p = self.params()
        S, M, H, K = self.S, self.M, self.num_heads, self.num_classes
        if not self.linear:
            one = lambda params, rows: functional_call(self.base, params, (rows,))  # noqa: E731  (b, H, K)
            over_members = vmap(one, in_dims=(0, None))
            z = vmap(over_members, in_dims=(0, 0 if xb is not None else None))(p, xb if xb is not None else x)
            return z.permute(0, 1, 3, 4, 2)
        w, bias = p["heads.linear.weight"], p.get("heads.linear.bias")  # (S, M, P, d), (S, M, P)
        P, d = w.shape[2], w.shape[3]
        if xb is not None:  # S GEMMs (M P, d) x (d, b): every member of a stream at once
            wt, xt = w.reshape(S, M * P, d), xb.transpose(1, 2)
            z = torch.bmm(wt, xt) if bias is None else torch.baddbmm(bias.reshape(S, M * P, 1), wt, xt)
        else:  # one GEMM (S M P, d) x (d, b)
            wt = w.reshape(S * M * P, d)
            z = wt @ x.t() if bias is None else torch.addmm(bias.reshape(-1, 1), wt, x.t())
        return z.view(S, M, H, K, -1)

    @torch.no_grad()
    def set_linear_grad(self, dz: torch.Tensor, xb: torch.Tensor | None, x: torch.Tensor | None) -> None:
        """Sets the leaves' gradients of linear heads from dL/dlogits ``dz`` (H, K, S, b, M): dW_s = dZ_s^T X_s,
        db_s = sum_i dZ_s[i] (what autograd gives through ``forward``'s GEMM, without its bookkeeping)."""
        S, M = self.S, self.M
        H, K, _, b, _ = dz.shape
        dzt = dz.permute(2, 4, 0, 1, 3).reshape(S, M * H * K, b)  # (S, M P, b)
        w = self.leaves[0]
        if xb is not None:
            w.grad = torch.bmm(dzt, xb).view(w.shape)
        else:
            w.grad = torch.mm(dzt.reshape(S * M * H * K, b), x).view(w.shape)
        if len(self.leaves) > 1:
            self.leaves[1].grad = dzt.sum(dim=2).view(self.leaves[1].shape)

    # ---- two classes, a shift-invariant loss: z_1 - z_0 alone ----------------------------------------------
    @torch.no_grad()
    def two_class_logits(self, xb: torch.Tensor | None, x: torch.Tensor | None) -> torch.Tensor:
        """Linear heads, K = 2: logits (H, 2, S, b, M) shifted per head to (0, z_1 - z_0), from one GEMM with the
        weight differences (half of ``forward``'s). Equal to ``forward``'s for a loss that sees logits only through
        softmax (``BatchedLoss.shift_invariant``)."""
        S, M, H = self.S, self.M, self.num_heads
        p = self.params()
        w = p["heads.linear.weight"].view(S, M, H, 2, -1)
        wd = (w[:, :, :, 1] - w[:, :, :, 0]).reshape(S, M * H, -1)
        bias = p.get("heads.linear.bias")
        bd = None if bias is None else (bias.view(S, M, H, 2)[..., 1] - bias.view(S, M, H, 2)[..., 0])
        if xb is not None:
            xt = xb.transpose(1, 2)
            zd = torch.bmm(wd, xt) if bd is None else torch.baddbmm(bd.reshape(S, M * H, 1), wd, xt)
        else:
            flat = wd.view(S * M * H, -1)
            zd = flat @ x.t() if bd is None else torch.addmm(bd.reshape(-1, 1), flat, x.t())
        b = zd.shape[-1]
        z = zd.new_zeros(H, 2, S, b, M)
        z[:, 1] = zd.view(S, M, H, b).permute(2, 0, 3, 1)
        return z

    @torch.no_grad()
    def set_two_class_grad(self, dz: torch.Tensor, xb: torch.Tensor | None, x: torch.Tensor | None) -> None:
        """The leaves' gradients from dL/dlogits ``dz`` (H, 2, S, b, M) of a shift-invariant loss: dz_0 = -dz_1,
        so dW_1 = dZ_1^T X (one GEMM) and dW_0 = -dW_1 (and the same for the biases)."""
        S, M = self.S, self.M
        H, _, _, b, _ = dz.shape
        d1 = dz[:, 1].permute(1, 3, 0, 2).reshape(S, M * H, b)  # (S, M H, b)
        g1 = torch.bmm(d1, xb) if xb is not None else torch.mm(d1.reshape(S * M * H, b), x)
        w = self.leaves[0]
        grad = w.new_empty(S, M, H, 2, w.shape[1] // (2 * H))
        grad[:, :, :, 1] = g1.view(S, M, H, -1)
        torch.neg(grad[:, :, :, 1], out=grad[:, :, :, 0])
        w.grad = grad.view(w.shape)
        if len(self.leaves) > 1:
            s1 = d1.sum(dim=2).view(S, M, H)
            self.leaves[1].grad = torch.stack([-s1, s1], dim=-1).view(self.leaves[1].shape)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (S * M, H, K, n) logits of every slot, in row chunks (examples last, see ``forward``)."""
        width = max(self.num_heads * self.num_classes, max(s[0] for s in self.shapes))
        chunk = max(1, _EVAL_FLOATS // max(1, self.S * self.M * width))
        shape = (self.S * self.M, self.num_heads, self.num_classes, len(x))
        if not len(x):
            return self.leaves[0].new_zeros(shape)
        parts = [self.forward(None, x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return torch.cat(parts, dim=4).reshape(shape)
