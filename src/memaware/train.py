"""The one training loop. Every method plugs in through ``memaware.methods.Method``; this module owns data
order, optimisation, evaluation, history and checkpoint selection on the validation split."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .data.groups import TRAIN, GroupData
from .dual import DualSGD
from .errors import ConfigError
from .methods import Method, TrainContext, make_method
from .metrics import group_report
from .models import build_model
from .optim import make_optimizer
from .tracking import SPLITS, History, Selector, all_logits

SELECTIONS = ("auto", "val_wga", "val_gi_wga", "val_worst_class", "val_avg", "last")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings. ``batch_size=0`` means full batch (one step per epoch)."""

    epochs: int = 1000
    lr: float = 1e-2
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 0
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


def _batches(n: int, bs: int, generator: torch.Generator) -> list[torch.Tensor | None]:
    """None means the whole training set in order (full batch, no indexing copy)."""
    if bs >= n:
        return [None]
    return list(torch.randperm(n, generator=generator).split(bs))


def fit(
    data: GroupData,
    method: str | Method,
    config: TrainConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    model: torch.nn.Module | None = None,
    **method_kwargs: Any,
) -> FitResult:
    """Trains ``method`` on the training split of ``data``; selects a checkpoint on validation.

    ``model_kwargs`` go to ``models.build_model`` (hidden, bias, activation), unless a ready ``model`` is given
    (e.g. an ensemble for regression); ``method_kwargs`` go to the method. Classification methods get per-group
    history (training accuracy from the training pass itself, logits before the step) and validation selection;
    regression methods (``task = "regression"``) get the loss history and train until the method says stop.
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    method = make_method(method, **method_kwargs) if isinstance(method, str) else method
    classify = method.task == "classification"
    if method.needs_train_groups and not data.has_attrs(TRAIN):
        raise ConfigError(
            f"method '{method.name}' needs training group labels (field 'a'), the data has none"
        )
    if not classify and cfg.selection != "last":
        raise ConfigError(f"method '{method.name}' is a regression: use selection='last'")
    model_kwargs = dict(model_kwargs or {})
    generator = torch.Generator().manual_seed(cfg.seed)
    train_idx = data.indices(TRAIN)
    ctx = TrainContext(
        data=data, train_idx=train_idx, config=cfg, generator=generator, model_kwargs=model_kwargs
    )
    method.prepare(ctx)
    if model is None:
        model = build_model(
            data.dim, data.num_classes, num_heads=method.num_heads, seed=cfg.seed, **model_kwargs
        )
    model.to(cfg.device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    selector = Selector(cfg.selection, data)
    history = History(data, cfg.history_splits if classify else (), model, cfg.device)

    x_train, y_train = data.x[train_idx].to(cfg.device), data.y[train_idx].to(cfg.device)
    n_train, num_groups = len(train_idx), data.num_groups
    if classify:
        # unknown attributes (-1) count in an extra bucket that History ignores
        g_train = torch.where(data.a[train_idx] >= 0, data.group[train_idx], num_groups).to(cfg.device)
    bs = cfg.batch_size if cfg.batch_size > 0 else n_train
    plain = type(method).forward is Method.forward or type(method).__dict__.get("plain_linear_forward", False)
    use_dual = cfg.dual and classify and plain and DualSGD.applicable(model, n_train, x_train[0].numel(), cfg)
    dual = DualSGD(model, x_train, cfg.lr, cfg.weight_decay) if use_dual else None
    show = cfg.progress and sys.stderr.isatty()
    epoch = 0
    model.train()
    all_pos = torch.arange(n_train)
    for epoch in tqdm(
        range(1, cfg.epochs + 1), desc=cfg.progress_label or method.name, disable=not show, leave=False
    ):
        hits = torch.zeros(num_groups + 1, device=cfg.device) if classify else None
        loss_sum = torch.zeros((), device=cfg.device)
        for pos in _batches(n_train, bs, generator):
            if pos is None:
                xb, yb, pos = x_train, y_train, all_pos
                gb = g_train if classify else None
            else:
                pos_d = pos.to(cfg.device)
                xb, yb = x_train[pos_d], y_train[pos_d]
                gb = g_train[pos_d] if classify else None
            if dual is not None:  # the same iterates as below, through the Gram matrix (memaware.dual)
                logits = dual.leaf_logits()
                loss = method.loss(logits, pos, yb)
                loss.backward()
                dual.step(logits)
            else:
                logits = method.forward(model, xb)
                loss = method.loss(logits, pos, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            detached = logits.detach()
            method.after_step(detached, pos, yb, model)
            if classify:
                hits.index_add_(0, gb, (method.predict_logits(detached).argmax(dim=1) == yb).float())
            loss_sum += loss.detach() * len(yb)
        stop = method.should_stop()
        if epoch % cfg.eval_every and epoch != cfg.epochs and not stop:
            continue
        if dual is not None and (selector.criterion != "last" or (history.splits and not history.linear)):
            dual.materialize()
        train_hits = hits[:num_groups] if classify else None
        history.record(epoch, train_hits, loss_sum / n_train, model, method, cfg.eval_batch_size, dual)
        if classify:
            selector.update(epoch, model, method, cfg.eval_batch_size, cfg.device)
        if stop:
            break

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
    )
