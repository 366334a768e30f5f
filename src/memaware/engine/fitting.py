"""``fit``: one run of a method through the one loop (``engine.loop``): its phases first, then set-up (model,
optimiser, data order), training, evaluation logging, checkpoint/resume and the checkpoint chosen on validation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..artifacts import atomic_writer
from ..data.groups import TRAIN, VAL, GroupData
from ..errors import ConfigError
from ..evallog import EvalLog
from ..methods import Method, TrainContext, make_method
from ..methods.base import checkpoint_for
from ..metrics import group_report
from ..models import all_logits, build_model, init_heads_
from ..models.backbones import set_head_dropout
from .batches import sampling_weights
from .config import TrainConfig
from .dual import DualSGD
from .evaluation import OnlineSelection
from .history import SPLITS, History
from .loop import run_epochs
from .optim import make_optimizer
from .single import SingleRunSteps
from .torch_optim import make_schedule, make_torch_optimizer, warmup_steps_for


@dataclass
class FitResult:
    """A trained model with its method, history and the checkpoint chosen on validation.

    ``epochs_run`` is less than ``config.epochs`` when the method asked to stop (e.g. a target loss reached).
    """

    model: torch.nn.Module
    method: Method
    config: TrainConfig
    selection: str  # the criterion actually used
    selected_epoch: int
    epochs_run: int
    history: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    val_inferred_groups: torch.Tensor | None = None
    seconds: float = 0.0
    # {criterion: {"epoch", "val_score", "val", "test"}}: what each selection criterion would have chosen
    selection_reports: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None  # the epoch of the checkpoint this run resumed from
    phases: dict[str, FitResult] = field(default_factory=dict)  # the method's earlier runs (MAT: "xrm")
    evaluations: EvalLog | None = None  # every evaluation of the run (memaware.selection reads it after the fact)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, K) outputs of the predicting head (eval mode, batched, on CPU)."""
        logits = all_logits(self.model, x, self.config.eval_batch_size, self.config.device)
        return self.method.predict_logits(logits).cpu()

    def evaluate(self, data: GroupData, split: str) -> dict:
        """``metrics.group_report`` of the selected checkpoint on ``split`` ('train', 'val' or 'test')."""
        idx = data.indices(SPLITS[split])
        pred = self.predict_logits(data.x[idx]).argmax(dim=1)
        return group_report(pred, data.y[idx], data.a[idx], data.num_classes, data.num_attrs)


def _signature(method: Method, cfg: TrainConfig, data: GroupData) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress", "progress_label", "device")}
    return {
        "method": method.name,
        "describe": repr(sorted(method.describe().items())),
        "config": repr(keep),
        "n": len(data),
        "n_train": int((data.split == TRAIN).sum()),
    }


def plain_linear_forward(cls: type[Method]) -> bool:
    """Whether ``cls.forward`` is ``model(x)`` for a linear model: the class in the MRO that defines ``forward``
    is ``Method`` or declares ``plain_linear_forward`` itself (a subclass that only adds hooks inherits it)."""
    for klass in cls.__mro__:
        if "forward" in klass.__dict__:
            return klass is Method or bool(klass.__dict__.get("plain_linear_forward", False))
    return True


def fit(
    data: GroupData,
    method: str | Method,
    config: TrainConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    model: torch.nn.Module | None = None,
    model_factory: Callable[[int], torch.nn.Module] | None = None,
    val_inferred_groups: torch.Tensor | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 30.0,
    **method_kwargs: Any,
) -> FitResult:
    """Trains ``method`` on the training split of ``data``; selects a checkpoint on validation.

    ``method`` is a registered name (or ``module:Class``) built with ``method_kwargs``, or a ``Method`` instance of
    which a fresh copy is trained (the instance itself is never changed). The method's ``phases()`` (MAT: XRM;
    JTT: the error-finding ERM) run first through this same function, each checkpointed beside the run, and their
    results reach ``method.prepare`` (and ``FitResult.phases``). ``model_kwargs`` go to ``models.build_model``
    (hidden, bias, activation), unless a ready ``model`` is given (e.g. an ensemble for regression) or
    ``model_factory(num_heads)`` builds one (end-to-end backbones; phases use it too). Classification methods get
    per-group history (training accuracy from the training pass itself, logits before the step) and validation
    selection under every criterion (``FitResult.selection_reports``); ``val_inferred_groups`` (n_val,) are
    XRM-inferred groups for the ``val_gi_wga`` criterion when the method infers none. Regression methods
    (``task = "regression"``) get the loss history and train until the method says stop.

    With ``checkpoint``, the full training state (weights, optimiser, method state such as XRM's flipped labels,
    the data-order RNG, selection and history) is written there atomically every ``checkpoint_every`` epochs and/or
    once ``checkpoint_seconds`` have passed since the last write (and at the end), and a run started on an existing
    checkpoint resumes from it and ends with the same numbers as an uninterrupted one (the Gram-matrix path
    of ``memaware.dual`` included: its state is saved as is).
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    # a fresh copy: nothing a previous run left on the instance (a phase-1 result, an error set) leaks in
    if method_kwargs and isinstance(method, Method):
        raise ConfigError("hyper-parameters go into the method: fit(data, Method(**hparams)) or fit(data, name, ...)")
    method = make_method(method, **method_kwargs) if isinstance(method, str) else method.clone()
    classify = method.task == "classification"
    if method.needs_train_groups and not data.has_attrs(TRAIN):
        raise ConfigError(
            f"method '{method.name}' needs training group labels (field 'a' >= 0 on split 0), the data has none"
        )
    if method.needs_val_groups and not (len(data.indices(VAL)) and data.has_attrs(VAL)):
        raise ConfigError(
            f"method '{method.name}' needs validation group labels (field 'a' >= 0 on split 1), the data has none"
        )
    if not classify and cfg.selection != "last":
        raise ConfigError(f"method '{method.name}' is a regression: use selection='last'")
    if model_factory is None and (cfg.clip_grad_norm or cfg.head_dropout):
        raise ConfigError("clip_grad_norm and head_dropout apply to end-to-end runs (a backbone), not to heads alone")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    model_kwargs = dict(model_kwargs or {})
    # the explicit pipeline: every earlier phase is a run of this same loop (MAT: XRM first; JTT: ERM first)
    earlier: dict[str, FitResult] = {}
    for phase in method.phases():
        phase_cfg = dataclasses.replace(
            cfg, selection="last", history_splits=(), progress_label=phase.label or phase.name
        )
        earlier[phase.name] = fit(
            data,
            phase.method,
            dataclasses.replace(phase_cfg, **phase.config),
            model_kwargs=model_kwargs,
            model_factory=model_factory,
            checkpoint=checkpoint_for(checkpoint, phase.name),
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
        )
    generator = torch.Generator().manual_seed(cfg.seed)
    train_idx = data.indices(TRAIN)
    ctx = TrainContext(
        data=data,
        train_idx=train_idx,
        config=cfg,
        generator=generator,
        model_kwargs=model_kwargs,
        model_factory=model_factory,
    )
    method.prepare(ctx, earlier)
    if model is None:
        if model_factory is not None:
            model = model_factory(method.num_heads)
        else:
            model = build_model(data.dim, data.num_classes, num_heads=method.num_heads, seed=cfg.seed, **model_kwargs)
    init_heads_(model, cfg.init)
    x_train = data.x[train_idx].to(cfg.device)
    # a linear or MLP head follows the data's float type (float64 data trains a float64 model)
    model.to(cfg.device, dtype=x_train.dtype if x_train.is_floating_point() and model_factory is None else None)
    method.init_model(model)  # a method fitted before the loop (DFR) writes its weights here
    selection = OnlineSelection(cfg.selection if classify else "last", data, val_inferred_groups, method)
    history = History(data, cfg.history_splits if classify else (), model, cfg.device)
    steps = _single_run_steps(method, model, cfg, data, train_idx, x_train, generator, classify, model_factory)
    signature = _signature(method, cfg, data)
    start, done, resumed = 1, False, None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
        if state["signature"] != signature:
            raise ConfigError(f"checkpoint {checkpoint} was written by a different run; delete it to start over")
        model.load_state_dict(state["model"])
        steps.optimizer.load_state_dict(state["optimizer"])
        if steps.schedule is not None:
            steps.schedule.load_state_dict(state["schedule"])
        method.load_state_dict(state["method"])
        generator.set_state(state["generator"])
        selection.load_state_dict(state["selection"])
        history.load_state_dict(state["history"])
        if steps.dual is not None:
            steps.dual.load_state_dict(state["dual"])
        start, done, resumed = state["epoch"] + 1, state["done"], state["epoch"]
        steps.steps = state["steps"]
    dual, last_save = steps.dual, [time.monotonic()]

    def evaluate(epoch: int) -> None:
        if dual is not None and (selection.active or (history.splits and not history.linear)):
            dual.materialize()
        history.record(epoch, *steps.train_accuracy(), steps.mean_loss(), model, method, cfg.eval_batch_size, dual)
        selection.update(epoch, steps.steps, model, method, cfg.eval_batch_size, cfg.device)

    def end_of_epoch(epoch: int, stop: bool) -> None:
        due = (checkpoint_every is not None and epoch % checkpoint_every == 0) or (
            checkpoint_seconds is not None and time.monotonic() - last_save[0] >= checkpoint_seconds
        )
        if checkpoint is None or not (due or stop or epoch == cfg.epochs):
            return
        last_save[0] = time.monotonic()
        if dual is not None:
            dual.materialize()  # writes the model's weights only; the dual iterates go on unchanged
        state = {
            "signature": signature,
            "epoch": epoch,
            "steps": steps.steps,
            "done": stop or epoch == cfg.epochs,
            "model": model.state_dict(),
            "optimizer": steps.optimizer.state_dict(),
            "schedule": None if steps.schedule is None else steps.schedule.state_dict(),
            "method": method.state_dict(),
            "generator": generator.get_state(),
            "selection": selection.state_dict(),
            "history": history.state_dict(),
            "dual": dual.state_dict() if dual is not None else None,
        }
        atomic_writer(checkpoint, lambda p, state=state: torch.save(state, p), ".pt")

    model.train()
    epoch = run_epochs(
        steps,
        first=start,
        epochs=0 if done else cfg.epochs,
        max_steps=cfg.max_steps if method.trains else -1,  # no step: one evaluation of init_model's model
        eval_every=cfg.eval_every,
        eval_every_steps=cfg.eval_every_steps,
        on_eval=evaluate,  # also mid-epoch with eval_every_steps (training accuracy and loss of the epoch so far)
        on_epoch_end=end_of_epoch,
        label=cfg.progress_label or method.name,
        progress=cfg.progress,
    )
    if done:
        epoch = resumed
    if dual is not None:
        dual.materialize()
    if selection.best_state is not None:
        model.load_state_dict(selection.best_state)
    model.eval()
    inferred = selection.inferred
    if classify and inferred is None:
        val = data.indices(VAL)
        logits = all_logits(model, data.x[val], cfg.eval_batch_size, cfg.device).cpu()
        inferred = method.infer_groups(logits, data.y[val], "val")
    curves = (
        history.curves(method, model)
        if classify
        else {"epoch": history.epochs, "loss": torch.stack(history.rec["loss"]).cpu().tolist()}
    )
    return FitResult(
        model=model,
        method=method,
        config=cfg,
        selection=selection.criterion or "last",
        selected_epoch=selection.best_epoch or epoch,
        epochs_run=epoch,
        history=curves,
        outputs=method.outputs(model, ctx),
        val_inferred_groups=inferred,
        seconds=time.perf_counter() - t0,
        selection_reports=selection.reports(),
        resumed_from=resumed,
        phases=earlier,
        evaluations=selection.log,
    )


def _single_run_steps(
    method: Method,
    model: torch.nn.Module,
    cfg: TrainConfig,
    data: GroupData,
    train_idx: torch.Tensor,
    x_train: torch.Tensor,
    generator: torch.Generator,
    classify: bool,
    model_factory: Callable[[int], torch.nn.Module] | None,
) -> SingleRunSteps:
    """The step machinery of one run: batch size, draw or loss weights, optimiser (and schedule), Gram path."""
    n_train, num_groups = len(train_idx), data.num_groups
    # unknown attributes (-1) count in an extra bucket that History ignores
    groups = torch.where(data.a[train_idx] >= 0, data.group[train_idx], num_groups).to(cfg.device) if classify else None
    pool = n_train if method.active_positions is None else len(method.active_positions)
    bs = cfg.batch_size if 0 < cfg.batch_size < pool else pool
    weights = sampling_weights(method, cfg, data.y[train_idx])
    loss_weights = None
    if weights is not None and bs >= pool:  # full batch: the same expected loss, through the loss
        loss_weights = (weights / weights.sum() * n_train).to(x_train.dtype if x_train.is_floating_point() else None)
        weights = None
    schedule = None
    if model_factory is not None:  # a backbone trains end to end: torch.optim with decay groups and a schedule
        optimizer = make_torch_optimizer(
            cfg.optimizer, model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.decay_rule
        )
        total = cfg.max_steps or cfg.epochs * -(-pool // bs)
        schedule = make_schedule(optimizer, cfg.schedule, total, warmup_steps_for(cfg.warmup_fraction, total))
        if cfg.head_dropout:
            set_head_dropout(model, cfg.head_dropout)
    else:  # heads on features: the same update rules without torch.optim's import cost (engine.optim)
        optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    use_dual = (
        cfg.dual
        and classify
        and plain_linear_forward(type(method))
        and method.active_positions is None
        and DualSGD.applicable(model, n_train, x_train[0].numel(), cfg)
    )
    return SingleRunSteps(
        method, model, optimizer, x_train, data.y[train_idx].to(cfg.device), groups, num_groups, bs, generator,
        weights, loss_weights, DualSGD(model, x_train, cfg.lr, cfg.weight_decay) if use_dual else None, schedule,
        cfg.clip_grad_norm,
    )  # fmt: skip
