"""The interface every method implements, and the facts each method declares about itself.

A method defines its loss and per-step bookkeeping; the one training loop (``memaware.engine.fit``) owns data order,
optimisation, evaluation and checkpoint selection. Class attributes declare what the rest of memaware derives from
the registry: ``name``, ``summary``, ``display_name``, which group labels the method trains with
(``needs_train_groups``), whether it infers validation groups itself (``infers_groups``), its hyper-parameters
(``hparams``: one default and a search distribution per family, see ``memaware.methods.space``) and its phases
(``phases()``: earlier runs it needs, e.g. XRM before MAT). ``fit`` trains a fresh copy (``clone()``) of the
method it is given, so an instance never carries state from one run into the next.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .space import HParam

if TYPE_CHECKING:
    from ..data.groups import GroupData
    from ..engine import FitResult, TrainConfig
    from ..models import MultiHeadNet


@dataclass
class TrainContext:
    """What a method may know about the run: the data, the training positions and a seeded generator."""

    data: GroupData
    train_idx: torch.Tensor  # (n_train,) row indices of the training split in ``data``
    config: TrainConfig
    generator: torch.Generator
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # builds a fresh model with the given number of heads (end-to-end backbones); None: ``build_model``
    model_factory: Callable[[int], torch.nn.Module] | None = None

    @property
    def y_train(self) -> torch.Tensor:
        return self.data.y[self.train_idx]

    @property
    def group_train(self) -> torch.Tensor:
        """(n_train,) group ids y * A + a of the training split (-1 where the attribute is unknown)."""
        return self.data.group[self.train_idx]


@dataclass(frozen=True)
class Batch:
    """One optimiser step's examples. ``pos`` (b,): positions in the training split (0..n_train-1), stable across
    epochs, so per-example state is indexed by them; ``y`` (b,) labels; ``weight`` (b,) per-example loss weights
    (mean 1 over the training set) when the loop folds sampling weights into a full-batch loss, else None."""

    pos: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None = None


@dataclass(frozen=True)
class Phase:
    """An earlier run a method needs: ``method`` trained by the same loop with the run's config updated by
    ``config`` (and ``selection='last'``); its ``FitResult`` reaches ``Method.prepare`` under ``name``."""

    name: str
    method: Method
    config: dict[str, Any] = field(default_factory=dict)
    label: str = ""


class Method:
    """Base class. Subclasses set ``name``, declare ``hparams`` and override ``loss``.

    Logits arrive as (b, H, K) for a batch. A batch that holds all n_train positions is the whole training set in
    order (``xrm.rows`` relies on it). State that changes during training changes in ``after_step`` only.
    """

    name: ClassVar[str] = "base"
    display_name: ClassVar[str] = ""  # the table's row label (default: the name in capitals)
    summary: ClassVar[str] = ""
    rank: ClassVar[int] = 100  # row order in tables and listings (built-ins: the paper's Table 1 order)
    num_heads: ClassVar[int] = 1
    needs_train_groups: ClassVar[bool] = False
    infers_groups: ClassVar[bool] = False  # writes its own inferred validation groups (needs no XRM run first)
    task: ClassVar[str] = "classification"  # or "regression": no group metrics, no validation selection
    hparams: ClassVar[dict[str, HParam]] = {}
    # A hand-derived gradient of ``loss`` for many members at once (a ``BatchedLoss`` subclass, in the method's own
    # module), used by the engine's batched mode (``memaware.vectorized``) where it ``applies``; None: the batched
    # mode takes each member's own ``loss`` through autograd. Pinned to autograd by tests/test_vectorized.py.
    batched_loss: ClassVar[type[BatchedLoss] | None] = None
    # True when ``forward`` equals ``model(x)`` for a linear model (no backbone), which lets the loop train it
    # through the Gram matrix (memaware.engine.dual); a subclass that overrides ``forward`` must opt in explicitly
    plain_linear_forward: ClassVar[bool] = True

    # Set in ``prepare`` by methods that rebalance the training set (RWG, JTT): a weight per training position.
    # The loop samples mini-batches with replacement in proportion to them (the authors' weighted sampler); in
    # full-batch mode it passes them as ``Batch.weight`` (same expected loss) for ``ce`` to apply.
    example_weights: torch.Tensor | None = None
    # Set in ``prepare`` by methods that train on a subset (SUBG): the training positions kept, each epoch
    # a shuffled pass over them.
    active_positions: torch.Tensor | None = None

    def __init__(self, **hparams: Any):
        """Stores the declared hyper-parameters (defaults for those not given), each checked against its
        declaration. Subclasses with extra (non-hyper-parameter) inputs take them as keywords and call this."""
        unknown = sorted(set(hparams) - set(self.hparams))
        if unknown:
            raise ConfigError(
                f"method '{self.name}' has no hyper-parameter(s) {', '.join(unknown)}"
                + (f" (it takes {', '.join(self.hparams)})" if self.hparams else "")
            )
        for key, spec in self.hparams.items():
            setattr(self, key, spec.check(self.name, key, hparams.get(key, spec.default)))

    # ---- declarations derived by the rest of memaware ---------------------------------------------------------
    @classmethod
    def label(cls) -> str:
        return cls.display_name or cls.name.upper()

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The keyword arguments this instance was built with (scikit-learn's convention): ``__init__``'s
        parameters read back from attributes of the same name (``deep`` is accepted for scikit-learn's ``clone``;
        a method holds no nested estimators)."""
        params = {}
        for p in inspect.signature(type(self).__init__).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            params[p.name] = getattr(self, p.name)
        for key in self.hparams:
            params.setdefault(key, getattr(self, key))
        return params

    def clone(self) -> Method:
        """A fresh, untrained copy with the same parameters (``fit`` trains a clone, as scikit-learn does)."""
        return type(self)(**{k: copy.deepcopy(v) for k, v in self.get_params().items()})

    def phases(self) -> list[Phase]:
        """Earlier runs this method needs (MAT: XRM; JTT: the error-finding ERM), in order."""
        return []

    def describe(self) -> dict[str, Any]:
        """Hyper-parameters and run facts, for results files."""
        return {key: getattr(self, key) for key in self.hparams}

    # ---- training -----------------------------------------------------------------------------------------
    def prepare(self, ctx: TrainContext, earlier: dict[str, FitResult]) -> None:
        """Called once before training with the results of ``phases()`` (e.g. draw XRM's halves, compute MAT's
        logit shift from phase 1's held-out logits)."""

    def forward(self, model: MultiHeadNet, x: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, H, K) logits used by ``loss``; override to route gradients (single-run MAT)."""
        return model(x)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Scalar training loss of (b, H, K) logits. Must not change the method's state (``after_step`` does)."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, logits: torch.Tensor, batch: Batch, model: torch.nn.Module) -> None:
        """Called after each optimiser step with the (pre-step, detached) training logits: state changes here."""

    def should_stop(self) -> bool:
        """Asked after every epoch; True ends training early (e.g. a target loss reached)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """Training state that changes step by step (flipped labels, group weights), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores ``state_dict()``; called after ``prepare`` when a run resumes from a checkpoint."""

    # ---- prediction ---------------------------------------------------------------------------------------
    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(n, H, K) -> (n, K): the logits the method predicts with (head 0 by default)."""
        return logits[:, 0]

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor | None:
        """Inferred group ids for validation examples (y * 2 + flag), or None if the method infers none."""
        return None

    @torch.no_grad()
    def outputs(self, model: MultiHeadNet, ctx: TrainContext) -> dict[str, Any]:
        """Extra results after training (e.g. XRM's held-out logits)."""
        return {}

    # ---- helpers for subclasses -----------------------------------------------------------------------------
    @staticmethod
    def ce(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy of (b, K) logits, weighted by ``batch.weight`` when the loop set it."""
        if batch.weight is None:
            return F.cross_entropy(logits, batch.y)
        w = batch.weight.to(logits.device)
        return (F.cross_entropy(logits, batch.y, reduction="none") * w).sum() / w.sum()


def checkpoint_for(checkpoint: Path | None, phase: str) -> Path | None:
    """Where a phase of a checkpointed run keeps its own checkpoint (beside the run's)."""
    return checkpoint.with_name(f"{checkpoint.stem}.{phase}.pt") if checkpoint is not None else None


# ---- the engine's batched mode: a method's hand-derived gradient for many members at once ------------------------
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

    @torch.no_grad()
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
