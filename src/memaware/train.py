"""The one training loop. Every method plugs in through ``memaware.methods.Method``; this module owns data
order, optimisation, evaluation, history and checkpoint selection on the validation split."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .artifacts import atomic_writer
from .data.groups import TRAIN, GroupData
from .dual import DualSGD
from .errors import ConfigError
from .methods import Batch, Method, TrainContext, make_method
from .methods.base import checkpoint_for
from .metrics import group_report
from .models import all_logits, build_model
from .optim import make_optimizer
from .tracking import SPLITS, History, Selector

SELECTIONS = ("auto", "val_wga", "val_gi_wga", "val_worst_class", "val_avg", "last")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings. ``batch_size=0`` means full batch (one step per epoch)."""

    epochs: int = 1000
    max_steps: int = 0  # > 0: stop after this many optimiser steps (the authors count steps, not epochs)
    lr: float = 1e-2
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 0
    class_balanced: bool = False  # draw mini-batches with every class equally likely (authors: CivilComments)
    seed: int = 0
    selection: str = "auto"
    eval_every: int = 1
    dual: bool = True  # full-batch SGD of a linear model through its Gram matrix when cheaper (memaware.dual)
    history_splits: tuple[str, ...] = ()
    eval_batch_size: int = 8192
    device: str = "cpu"
    progress: bool = False
    progress_label: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0 (0 = no limit), got {self.max_steps}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 0:
            raise ConfigError(f"batch_size must be >= 0 (0 = full batch), got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}, got '{self.selection}'")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        for s in self.history_splits:
            if s not in ("val", "test"):
                raise ConfigError(f"history_splits may hold 'val' and 'test', got '{s}'")


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


def epoch_batches(
    n: int, bs: int, generator: torch.Generator, weights: torch.Tensor | None, active: torch.Tensor | None
) -> list[torch.Tensor | None]:
    """One epoch's batches of training positions. None means the whole training set in order (full batch).

    With ``weights``, as many positions as an epoch holds are drawn with replacement in proportion to them (the
    authors' weighted sampler); with ``active``, a shuffled pass over those positions only.
    """
    pool = n if active is None else len(active)
    if weights is not None:
        return list(torch.multinomial(weights, pool, replacement=True, generator=generator).split(bs))
    if active is not None:
        return [active] if bs >= pool else list(active[torch.randperm(pool, generator=generator)].split(bs))
    if bs >= n:
        return [None]
    return list(torch.randperm(n, generator=generator).split(bs))


def sampling_weights(method: Method, cfg: TrainConfig, y_train: torch.Tensor) -> torch.Tensor | None:
    """Per-position draw weights from the method (RWG, JTT), class balance and the active subset; or None."""
    weights = method.example_weights
    if cfg.class_balanced:
        from .methods.balancing import inverse_frequency_weights

        balance = inverse_frequency_weights(y_train if method.active_positions is None else _masked(y_train, method))
        weights = balance if weights is None else weights * balance
    if weights is not None and method.active_positions is not None:
        keep = torch.zeros(len(y_train), dtype=torch.bool)
        keep[method.active_positions] = True
        weights = torch.where(keep, weights, 0.0)
    return None if weights is None else weights.double()


def _masked(y_train: torch.Tensor, method: Method) -> torch.Tensor:
    """Labels where inactive positions get their own value, so that class counts cover the active subset only."""
    labels = torch.full_like(y_train, int(y_train.max()) + 1)
    labels[method.active_positions] = y_train[method.active_positions]
    return labels


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
    if not classify and cfg.selection != "last":
        raise ConfigError(f"method '{method.name}' is a regression: use selection='last'")
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
    model.to(cfg.device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    selector = Selector(cfg.selection, data, val_inferred_groups)
    history = History(data, cfg.history_splits if classify else (), model, cfg.device)

    x_train, y_train = data.x[train_idx].to(cfg.device), data.y[train_idx].to(cfg.device)
    n_train, num_groups = len(train_idx), data.num_groups
    if classify:
        # unknown attributes (-1) count in an extra bucket that History ignores
        g_train = torch.where(data.a[train_idx] >= 0, data.group[train_idx], num_groups).to(cfg.device)
    pool = n_train if method.active_positions is None else len(method.active_positions)
    bs = cfg.batch_size if 0 < cfg.batch_size < pool else pool
    weights = sampling_weights(method, cfg, data.y[train_idx])
    loss_weights = None
    if weights is not None and bs >= pool:  # full batch: the same expected loss, through the loss
        loss_weights = (weights / weights.sum() * n_train).float()
        weights = None
    plain = plain_linear_forward(type(method))
    use_dual = (
        cfg.dual
        and classify
        and plain
        and method.active_positions is None
        and DualSGD.applicable(model, n_train, x_train[0].numel(), cfg)
    )
    dual = DualSGD(model, x_train, cfg.lr, cfg.weight_decay) if use_dual else None
    signature = _signature(method, cfg, data)
    start, done, resumed, steps = 1, False, None, 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
        if state["signature"] != signature:
            raise ConfigError(f"checkpoint {checkpoint} was written by a different run; delete it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        method.load_state_dict(state["method"])
        generator.set_state(state["generator"])
        selector.load_state_dict(state["selector"])
        history.load_state_dict(state["history"])
        if dual is not None:
            dual.load_state_dict(state["dual"])
        start, done, resumed = state["epoch"] + 1, state["done"], state["epoch"]
        steps = state["steps"]
    show = cfg.progress and sys.stderr.isatty()
    epoch, last_save = start - 1, time.monotonic()
    model.train()
    all_pos = torch.arange(n_train)
    x_buffer = x_train.new_empty((0, *x_train.shape[1:]))
    epochs = range(start, cfg.epochs + 1) if not done else range(0)
    for epoch in tqdm(epochs, desc=cfg.progress_label or method.name, disable=not show, leave=False):
        hits = torch.zeros(num_groups + 1, device=cfg.device) if classify else None
        seen = torch.zeros(num_groups + 1, device=cfg.device) if classify else None
        loss_sum, drawn = torch.zeros((), device=cfg.device), 0
        for pos in epoch_batches(n_train, bs, generator, weights, method.active_positions):
            if cfg.max_steps and steps >= cfg.max_steps:
                break
            steps += 1
            if pos is None:
                xb, yb, pos = x_train, y_train, all_pos
                gb = g_train if classify else None
            else:
                pos_d = pos.to(cfg.device)
                # gather into one reused buffer: a fresh (b, d) tensor per step costs an allocation + page faults
                if len(x_buffer) < len(pos_d):
                    x_buffer = x_train.new_empty((len(pos_d), *x_train.shape[1:]))
                xb = torch.index_select(x_train, 0, pos_d, out=x_buffer[: len(pos_d)])
                yb = y_train[pos_d]
                gb = g_train[pos_d] if classify else None
            lw = None if loss_weights is None else (loss_weights if len(pos) == n_train else loss_weights[pos])
            batch = Batch(pos, yb, lw)
            if dual is not None:  # the same iterates as below, through the Gram matrix (memaware.dual)
                logits = dual.leaf_logits()
                loss = method.loss(logits, batch)
                loss.backward()
                dual.step(logits)
            else:
                logits = method.forward(model, xb)
                loss = method.loss(logits, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            detached = logits.detach()
            method.after_step(detached, batch, model)
            if classify:
                hits.index_add_(0, gb, (method.predict_logits(detached).argmax(dim=1) == yb).float())
                seen.index_add_(0, gb, torch.ones_like(yb, dtype=seen.dtype))
            loss_sum += loss.detach() * len(yb)
            drawn += len(yb)
        stop = method.should_stop() or bool(cfg.max_steps and steps >= cfg.max_steps)
        if not (epoch % cfg.eval_every and epoch != cfg.epochs and not stop):
            if dual is not None and (selector.criterion != "last" or (history.splits and not history.linear)):
                dual.materialize()
            train_hits = (hits[:num_groups], seen[:num_groups]) if classify else (None, None)
            history.record(epoch, *train_hits, loss_sum / drawn, model, method, cfg.eval_batch_size, dual)
            if classify:
                selector.update(epoch, model, method, cfg.eval_batch_size, cfg.device)
        due = (checkpoint_every is not None and epoch % checkpoint_every == 0) or (
            checkpoint_seconds is not None and time.monotonic() - last_save >= checkpoint_seconds
        )
        if checkpoint is not None and (due or stop or epoch == cfg.epochs):
            last_save = time.monotonic()
            if dual is not None:
                dual.materialize()  # writes the model's weights only; the dual iterates go on unchanged
            state = {
                "signature": signature,
                "epoch": epoch,
                "steps": steps,
                "done": stop or epoch == cfg.epochs,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "method": method.state_dict(),
                "generator": generator.get_state(),
                "selector": selector.state_dict(),
                "history": history.state_dict(),
                "dual": dual.state_dict() if dual is not None else None,
            }
            atomic_writer(checkpoint, lambda p, state=state: torch.save(state, p), ".pt")
        if stop:
            break
    if done:
        epoch = resumed

    if dual is not None:
        dual.materialize()
    if selector.best_state is not None:
        model.load_state_dict(selector.best_state)
    model.eval()
    inferred = selector.inferred
    if classify and inferred is None:
        logits = all_logits(model, selector.x, cfg.eval_batch_size, cfg.device).cpu()
        inferred = method.infer_groups(logits, selector.y, "val")
    curves = (
        history.curves(method, model)
        if classify
        else {"epoch": history.epochs, "loss": torch.stack(history.rec["loss"]).cpu().tolist()}
    )
    return FitResult(
        model=model,
        method=method,
        config=cfg,
        selection=selector.criterion,
        selected_epoch=selector.best_epoch or epoch,
        epochs_run=epoch,
        history=curves,
        outputs=method.outputs(model, ctx),
        val_inferred_groups=inferred,
        seconds=time.perf_counter() - t0,
        selection_reports=selector.reports() if classify else {},
        resumed_from=resumed,
        phases=earlier,
    )
