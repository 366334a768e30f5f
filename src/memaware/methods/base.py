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

from ..errors import ConfigError
from ..lazy import lazy_module, no_grad
from .space import HParam

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

if TYPE_CHECKING:
    from ..data.groups import GroupData
    from ..engine import FitResult, TrainConfig
    from ..models import MultiHeadNet
    from .batched import BatchedLoss


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
    needs_val_groups: ClassVar[bool] = False  # trains on the validation groups (DFR): refuses data without them
    infers_groups: ClassVar[bool] = False  # writes its own inferred validation groups (needs no XRM run first)
    task: ClassVar[str] = "classification"  # or "regression": no group metrics, no validation selection
    hparams: ClassVar[dict[str, HParam]] = {}
    # A hand-derived gradient of ``loss`` for many members at once (a ``BatchedLoss`` subclass, in the method's own
    # module), used by the engine's batched mode (``memaware.engine.many``) where it ``applies``; None: the batched
    # mode takes each member's own ``loss`` through autograd. Pinned to autograd by tests/test_vectorized.py.
    batched_loss: ClassVar[type[BatchedLoss] | None] = None
    # True when ``forward`` equals ``model(x)`` for a linear model (no backbone), which lets the loop train it
    # through the Gram matrix (memaware.engine.dual); a subclass that overrides ``forward`` must opt in explicitly
    plain_linear_forward: ClassVar[bool] = True
    # True when ``loss_and_gradient`` gives dL/d(logits) in closed form: with a model that backpropagates by hand
    # (``EnsembleMLP.backward_into``) the loop then takes no autograd graph per step (engine.optimisation, "analytic")
    analytic_gradient: ClassVar[bool] = False
    # False for a method whose model is computed before the loop (DFR's last layer, in ``prepare``) and written
    # into the fresh model by ``init_model``: the loop then takes no step and evaluates that model once
    trains: ClassVar[bool] = True

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

    def model_parts(self) -> tuple[str, ...]:
        """Methods the model must have besides ``forward(x) -> (b, H, K)`` (single-run MAT: ``features``, ``heads``,
        ``backbone_parameters``); ``fit`` checks them on the built model before any step."""
        return ()

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

    def init_model(self, model: torch.nn.Module) -> None:
        """Called once on the freshly built model, before training (after ``prepare``): a method that computes its
        weights itself (``trains = False``) writes them here (a resumed run then loads its checkpoint over them)."""

    def forward(self, model: MultiHeadNet, x: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, H, K) logits used by ``loss``; override to route gradients (single-run MAT)."""
        return model(x)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Scalar training loss of (b, H, K) logits. Must not change the method's state (``after_step`` does)."""
        raise NotImplementedError

    def loss_and_gradient(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(``loss``, dL/d(logits)) without autograd, for methods that declare ``analytic_gradient``; the gradient
        must equal ``loss``'s autograd gradient bit for bit."""
        raise NotImplementedError

    @no_grad
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

    @no_grad
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
