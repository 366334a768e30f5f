"""Group DRO (Sagawa et al. 2020, Algorithm 1): minimise the q-weighted sum of per-group losses, where q follows
exponentiated-gradient ascent on the groups' losses with step size eta. Needs training group labels."""

from __future__ import annotations

from typing import Any

from ..lazy import lazy_module, no_grad
from .base import Batch, Method, TrainContext
from .batched import BatchedLoss, MemberStack, StackedBatch
from .registry import register
from .space import HParam, LogUniform

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


def group_mean_losses(losses: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean of ``losses`` (b,) over ``groups`` (b,) in 0..G-1 -> (means (G,), present (G,) bool)."""
    sums = torch.zeros(num_groups, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
    counts = torch.bincount(groups, minlength=num_groups).to(losses.dtype)
    return sums / counts.clamp_min(1.0), counts > 0


def exponentiated_step(q: torch.Tensor, group_losses: torch.Tensor, present: torch.Tensor, eta: float) -> torch.Tensor:
    """q_g <- q_g exp(eta l_g) for the groups in the batch, renormalised (Sagawa et al. 2020, Alg. 1)."""
    q = q * torch.exp(eta * group_losses.detach() * present)
    return q / q.sum()


class GroupDROGrad(BatchedLoss):
    """GroupDRO's fast path for many members: with the batch's group means l_g and counts n_g of each member,
    q_g <- q_g exp(eta l_g) (groups in the batch), renormalised (``exponentiated_step``), and L = sum_g q_g l_g,
    so dL/dz_i = q_{g(i)} / n_{g(i)} (softmax(z_i) - e_{y_i}); ``after_step`` keeps the new q (Alg. 1)."""

    shift_invariant = True

    def __init__(self, members: MemberStack):
        super().__init__(members)
        self.groups = members.per_stream(lambda m: m.groups)  # (S, n): a stream's members share their examples
        self.q = members.per_member(lambda m: m.q, torch.float64)  # (S, M, G)
        self.eta = members.per_member(lambda m: float(m.eta), torch.float64).unsqueeze(-1)  # (S, M, 1)
        self.ids = torch.arange(members.first.num_groups, device=members.device)
        self._next_q: tuple | None = None

    @staticmethod
    def ce_and_residual(z: torch.Tensor, batch: StackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-example cross-entropy (S, b, M), softmax - onehot (K, S, b, M)) of head 0 of logits z."""
        logp = z[0].log_softmax(dim=0)  # (K, S, b, M)
        classes = torch.arange(z.shape[1], device=z.device).view(-1, 1, 1, 1)
        onehot = (batch.y.unsqueeze(0).unsqueeze(-1) == classes).to(logp.dtype)
        ce = -(logp * onehot).sum(dim=0)
        return ce, logp.exp_().sub_(onehot)

    def grad(self, z: torch.Tensor, batch: StackedBatch) -> torch.Tensor:
        ce, dz = self.ce_and_residual(z, batch)
        in_group = (batch.take(self.groups).unsqueeze(-1) == self.ids).to(ce.dtype)  # (S, b, G)
        if batch.present is None:
            counts = in_group.sum(dim=1).unsqueeze(1)  # (S, 1, G)
            sums = torch.bmm(ce.transpose(1, 2), in_group)  # (S, M, G)
        else:
            present = batch.present.to(ce.dtype)
            counts = torch.einsum("sbm,sbg->smg", present, in_group)
            sums = torch.einsum("sbm,sbg->smg", ce * present, in_group)
        size = counts.clamp_min(1.0)
        means = sums / size
        q = self.q * torch.exp(self.eta * means.double() * (counts > 0))
        q = q / q.sum(dim=-1, keepdim=True)
        self._next_q = (batch, q)
        w = torch.bmm(in_group, (q.to(ce.dtype) / size).transpose(1, 2))  # (S, b, M): q_g(i) / n_g(i)
        if batch.present is not None:
            w = w * batch.present
        return dz.mul_(w).unsqueeze(0)

    @no_grad
    def after_step(self, z: torch.Tensor, batch: StackedBatch) -> None:
        if self._next_q is None or self._next_q[0] is not batch:
            self.grad(z, batch)
        self.q, self._next_q = self._next_q[1], None

    def store(self) -> None:
        self.members.store_per_member(self.q, lambda m, v: setattr(m, "q", v))


class MemberGroupDROGrad(GroupDROGrad):
    """GroupDRO's fast path where every member has its own training groups (XRM+GroupDRO: groups from each member's
    XRM phase): the same exponentiated step and weights as ``GroupDROGrad``, with the group indicator per member,
    (S, b, M, G) instead of one per stream (S, b, G)."""

    def __init__(self, members: MemberStack):
        super().__init__(members)
        self.groups = members.per_example(lambda m: m.groups)  # (S, n, M)

    def grad(self, z: torch.Tensor, batch: StackedBatch) -> torch.Tensor:
        ce, dz = self.ce_and_residual(z, batch)
        in_group = (batch.take(self.groups).unsqueeze(-1) == self.ids).to(ce.dtype)  # (S, b, M, G)
        if batch.present is not None:
            in_group = in_group * batch.present.to(ce.dtype).unsqueeze(-1)
        counts = in_group.sum(dim=1)  # (S, M, G)
        sums = torch.einsum("sbm,sbmg->smg", ce, in_group)
        size = counts.clamp_min(1.0)
        q = self.q * torch.exp(self.eta * (sums / size).double() * (counts > 0))
        q = q / q.sum(dim=-1, keepdim=True)
        self._next_q = (batch, q)
        w = torch.einsum("sbmg,smg->sbm", in_group, q.to(ce.dtype) / size)  # q_g(i) / n_g(i), 0 where absent
        return dz.mul_(w).unsqueeze(0)


@register
class GroupDRO(Method):
    name = "groupdro"
    rank = 1
    display_name = "GroupDRO"
    summary = "GroupDRO, exponentiated-gradient group weights (Sagawa et al.)"
    needs_train_groups = True
    batched_loss = GroupDROGrad
    hparams = {
        "eta": HParam(0.01, "GroupDRO step size of the group weights", search={"*": LogUniform(-3, -1)}, low=0.0),
    }

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        self.groups = ctx.group_train
        self.num_groups = ctx.data.num_groups
        self.q = torch.full((self.num_groups,), 1.0 / self.num_groups, dtype=torch.float64)

    def _step(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-group mean losses (G,), q after this batch's exponentiated step (G,)): Alg. 1 weighs the batch
        with the q it has just updated."""
        g = (self.groups if len(batch.pos) == len(self.groups) else self.groups[batch.pos]).to(logits.device)
        ce = F.cross_entropy(logits[:, 0], batch.y, reduction="none")
        means, present = group_mean_losses(ce, g, self.num_groups)
        return means, exponentiated_step(self.q.to(ce.device), means.double(), present, self.eta)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        means, q = self._step(logits, batch)
        return (q.to(means.dtype) * means).sum()

    @no_grad
    def after_step(self, logits: torch.Tensor, batch: Batch, model: torch.nn.Module) -> None:
        # the same pre-step logits as loss() saw: the same q it weighed the batch with
        self.q = self._step(logits, batch)[1]

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q = state["q"].clone()

    def describe(self) -> dict[str, Any]:
        q = getattr(self, "q", None)
        return {"eta": self.eta, "group_weights": None if q is None else q.tolist()}
