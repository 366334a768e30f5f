"""The engine's batched mode, as methods see it: a method's hand-derived loss gradient for many members at once
(``BatchedLoss``, declared as ``Method.batched_loss``), the stacked step it reads (``StackedBatch``) and its
members' state (``MemberStack``); ``CrossEntropyGrad`` serves the cross-entropy family (ERM, RWG, SUBG, JTT).
Every fast path is pinned to autograd of its method's own ``loss`` and ``after_step`` by tests/test_vectorized.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..lazy import lazy_module, no_grad

torch = lazy_module("torch")


if TYPE_CHECKING:
    from .base import Method

# Members of one batched program are laid out as S streams (members that draw the same batches) x M slots. A fast
# path sees every member's logits at once as z (H, K, S, b, M): head, class, stream, example of the step, slot. The
# class axis comes first because torch's (log_)softmax over a short innermost axis is ~20x slower on a CPU.


@dataclass(frozen=True)
class StackedBatch:
    """One step of every member, in a shared pool of ``n`` training positions.

    ``pos`` (S, b): each stream's positions (None: the whole pool in order, b = n); ``flat`` (S * b,) = s * n + pos;
    ``y`` (S, b) labels; ``weight`` (S, b, M) each member's ``Batch.weight`` (sampling weights folded into a
    full-batch loss) or None; ``present`` (S, b, M) bool: the example belongs to the member's training set (members
    on their own subsets, full batch) or None (all do); ``uniforms`` (S, b) U(0, 1) draws from each stream's
    generator, one per example, where the fast path ``draws_uniforms`` (what the method draws in ``after_step``).
    """

    pos: torch.Tensor | None
    flat: torch.Tensor | None
    y: torch.Tensor
    n: int
    weight: torch.Tensor | None = None
    present: torch.Tensor | None = None
    uniforms: torch.Tensor | None = None

    def take(self, state: torch.Tensor) -> torch.Tensor:
        """Per-example state (S, n, ...) (contiguous) -> (S, b, ...) at this step's positions."""
        if self.pos is None:
            return state
        S, b = self.pos.shape
        rest = state.shape[2:]
        return state.view(S * self.n, *rest).index_select(0, self.flat).view(S, b, *rest)

    def put(self, state: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Writes ``values`` (S, b, ...) into ``state`` (S, n, ...) at this step's positions; returns the state
        (``values`` itself for the whole pool). A position drawn twice keeps its last value, as ``t[pos] = v``."""
        if self.pos is None:
            return values.contiguous()
        rest = state.shape[2:]
        state.view(-1, *rest).index_copy_(0, self.flat, values.reshape(-1, *rest))
        return state


class MemberStack:
    """A batched program's members as a fast path reads and writes their state.

    Slot (s, j) holds ``methods[s][j]``, prepared (``Method.prepare`` ran on the member's own context);
    ``real[s][j]`` is False for an inert pad (the stream's first member repeated; it learns nothing and is never
    written back). The members of stream s train on the shared positions ``rows[s]`` (n_s,): their own position p
    is shared position rows[s][p] (None: the whole pool of ``n``, in order).
    """

    def __init__(
        self,
        methods: list[list[Method]],
        real: list[list[bool]],
        rows: list[torch.Tensor | None],
        n: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        self.methods, self.real, self.rows, self.n = methods, real, rows, n
        self.device, self.dtype = torch.device(device), dtype

    @property
    def shape(self) -> tuple[int, int]:
        """(S, M)."""
        return len(self.methods), len(self.methods[0])

    @property
    def first(self) -> Method:
        return self.methods[0][0]

    def per_member(self, get: Callable[[Method], Any], dtype: torch.dtype | None = None) -> torch.Tensor:
        """(S, M, ...): ``get(method)`` (a number or a tensor) of every slot."""
        # numbers become ``dtype`` directly: a float64 hyper-parameter must not pass through float32
        rows = [torch.stack([torch.as_tensor(get(m), dtype=dtype) for m in row]) for row in self.methods]
        return torch.stack(rows).to(self.device, dtype)

    def _shared(self, values: torch.Tensor, s: int, fill: float) -> torch.Tensor:
        """A member's per-position values (n_s, ...) placed at its stream's shared positions (n, ...)."""
        if self.rows[s] is None:
            return values
        out = torch.full((self.n, *values.shape[1:]), fill, dtype=values.dtype)
        out[self.rows[s]] = values
        return out

    def per_example(
        self, get: Callable[[Method], torch.Tensor], fill: float = 0, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """(S, n, M, ...): ``get(method)`` (n_c, ...) in each member's own positions, at its shared positions
        (``fill`` where the member has no example)."""
        streams = []
        for s, row in enumerate(self.methods):
            streams.append(torch.stack([self._shared(torch.as_tensor(get(m)), s, fill) for m in row], dim=1))
        return torch.stack(streams).to(self.device, dtype).contiguous()

    def per_stream(
        self, get: Callable[[Method], torch.Tensor], fill: float = 0, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """(S, n, ...): per-position values that every member of a stream shares (they depend on the data and the
        stream's positions only, e.g. group ids), read from the stream's first member."""
        out = [self._shared(torch.as_tensor(get(row[0])), s, fill) for s, row in enumerate(self.methods)]
        return torch.stack(out).to(self.device, dtype).contiguous()

    def store_per_member(self, stacked: torch.Tensor, put: Callable[[Method, torch.Tensor], None]) -> None:
        """Writes slot (s, j) of ``stacked`` (S, M, ...) back into each real member with ``put(method, value)``."""
        for s, row in enumerate(self.methods):
            for j, m in enumerate(row):
                if self.real[s][j]:
                    put(m, stacked[s, j].detach().cpu().clone())

    def store_per_example(self, stacked: torch.Tensor, put: Callable[[Method, torch.Tensor], None]) -> None:
        """Writes ``stacked`` (S, n, M, ...) back into each real member, in its own positions (n_c, ...)."""
        for s, row in enumerate(self.methods):
            for j, m in enumerate(row):
                if self.real[s][j]:
                    values = stacked[s, :, j].detach().cpu()
                    put(m, (values if self.rows[s] is None else values[self.rows[s]]).clone())


class BatchedLoss:
    """A method's hand-derived loss gradient for every member of a batched program at once (its fast path).

    Built from the members' prepared ``Method`` objects (``MemberStack``), it stacks the state their ``loss`` reads,
    returns dL_m/dz for every member from logits z (H, K, S, b, M) (``grad``), applies what each member's
    ``after_step`` would (``after_step``, same pre-step logits), and writes the state back (``store``). A method
    with a fast path predicts row by row and identically for every member (the engine applies the first member's
    ``predict_logits`` to all members' rows at once) and never asks to stop early. Each fast path is pinned to
    autograd of the method's own ``loss`` and to its ``after_step`` by tests/test_vectorized.py.
    """

    # one U(0, 1) per drawn example per step from the run's generator, drawn by ``after_step`` (XRM's label flips)
    draws_uniforms: ClassVar[bool] = False
    # the loss, its gradient and ``after_step`` see each head's logits only through softmax (adding a constant to a
    # head's logits changes nothing, so dL/dz sums to 0 over the classes): with two classes the engine may then
    # compute z_1 - z_0 alone, half the work of a linear head's step
    shift_invariant: ClassVar[bool] = False

    def __init__(self, members: MemberStack):
        self.members = members

    @classmethod
    def applies(cls, method: Method) -> bool:
        """Whether this fast path trains ``method`` (e.g. MAT's two-phase form only); its ``forward`` must then be
        ``model(x)``."""
        return True

    def grad(self, z: torch.Tensor, batch: StackedBatch) -> torch.Tensor:
        """dL_m/dz (H, K, S, b, M) of every member's loss on its batch, from logits z (H, K, S, b, M)."""
        raise NotImplementedError

    @no_grad
    def after_step(self, z: torch.Tensor, batch: StackedBatch) -> None:
        """Every member's ``after_step`` with the pre-step logits z of ``grad``'s call."""

    def store(self) -> None:
        """Writes the stacked state back into the members' ``Method`` objects."""


def softmax_grad(z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dCE(z, target)/dz = softmax(z) - onehot(target) with the class axis first: z (K, ...), target (...)
    broadcastable to z's trailing shape. Returns (gradient (K, ...), one-hot (K, ...))."""
    classes = torch.arange(z.shape[0], device=z.device).view(-1, *([1] * target.dim()))
    onehot = (target.unsqueeze(0) == classes).to(z.dtype)
    return z.softmax(dim=0).sub_(onehot), onehot


def member_weights(batch: StackedBatch, dtype: torch.dtype) -> torch.Tensor | None:
    """(S, b, M) per-example loss weights of each member: ``Batch.weight`` on the member's own examples (0 on
    others), or None when every member weighs its examples equally."""
    w = batch.weight
    if batch.present is not None:
        present = batch.present.to(dtype)
        w = present if w is None else w * present
    return w


class CrossEntropyGrad(BatchedLoss):
    """``Method.ce`` of head 0 (ERM, RWG, SUBG, JTT), optionally on shifted logits (``shift``): with weights w
    (``Batch.weight`` or 1 on the member's examples), L_m = sum_i w_i CE(z_i + s_i, y_i) / sum_i w_i, so
    dL_m/dz_i = w_i / sum_j w_j (softmax(z_i + s_i) - e_{y_i}) (the mean: w_i = 1 / b)."""

    shift_invariant = True

    def shift(self, batch: StackedBatch) -> torch.Tensor | None:
        """(K, S, b, M) additive logit shift of the loss, or None."""
        return None

    def grad(self, z: torch.Tensor, batch: StackedBatch) -> torch.Tensor:
        zc, s = z[0], self.shift(batch)
        dz, _ = softmax_grad(zc if s is None else zc + s, batch.y.unsqueeze(-1))  # (K, S, b, M)
        w = member_weights(batch, dz.dtype)
        if w is None:
            dz.mul_(1.0 / z.shape[3])
        else:
            dz.mul_(w / w.sum(dim=1, keepdim=True))
        return dz.unsqueeze(0)
