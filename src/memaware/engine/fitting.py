"""``fit``: one run of a method through the one loop (``engine.loop``), in five steps with one job each:
``fresh_method`` + ``check_run`` (refuse what cannot run), ``run_phases`` (the method's earlier runs, each a ``fit``),
``set_up`` (model, optimisation, data order, selection and history: a ``Run``), ``drive`` (the loop, with
evaluation and checkpoints) and ``finish`` (the selected checkpoint as a ``FitResult``). Optimisers are built in
``engine.optimisation``, checkpoints written and resumed by ``engine.checkpoint``."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.groups import TRAIN, VAL, GroupData
from ..errors import ConfigError, DataError
from ..methods import Method, TrainContext, make_method
from ..methods.base import checkpoint_for
from ..models import all_logits, build_model, init_heads_
from ..models.end_to_end_net import EndToEndNet
from .batches import sampling_weights
from .checkpoint import Checkpointer, run_signature
from .config import TrainConfig
from .divergence import check_finite
from .end_to_end import configure_end_to_end, grad_scaler
from .evaluation import OnlineSelection
from .history import History
from .loop import run_epochs
from .optimisation import build_single, plain_linear_forward
from .progress import meter_for, summary_line
from .result import FitResult
from .single import SingleRunSteps

ModelFactory = Callable[[int], torch.nn.Module]


@dataclass
class Run:
    """Everything one run's loop touches, built by ``set_up``."""

    data: GroupData
    method: Method
    config: TrainConfig
    ctx: TrainContext
    model: torch.nn.Module
    generator: torch.Generator
    steps: SingleRunSteps
    selection: OnlineSelection
    history: History
    throughput: dict[str, float] | None = None  # engine.progress.RunProgress.summary, once the loop has run

    @property
    def classify(self) -> bool:
        return self.method.task == "classification"


def fit(
    data: GroupData,
    method: str | Method,
    config: TrainConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    model: torch.nn.Module | None = None,
    model_factory: ModelFactory | None = None,
    val_inferred_groups: torch.Tensor | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 30.0,
    backbone: Any = None,
    **method_kwargs: Any,
) -> FitResult:
    """Trains ``method`` on the training split of ``data``; selects a checkpoint on validation.

    ``method`` is a registered name (or ``module:Class``) built with ``method_kwargs``, or a ``Method`` instance of
    which a fresh copy is trained (the instance itself is never changed). The method's ``phases()`` (MAT: XRM;
    JTT: the error-finding ERM) run first through this same function, each checkpointed beside the run, and their
    results reach ``method.prepare`` (and ``FitResult.phases``). ``model_kwargs`` go to ``models.build_model``
    (hidden, bias, activation), unless a ready ``model`` is given (e.g. an ensemble for regression) or
    ``model_factory(num_heads)`` builds one (end-to-end backbones; phases use it too: a fresh model mapping x's
    rows to (b, num_heads, K) logits, checked on two training rows before any step). ``backbone`` is the short
    route to the same: a catalogue name, ``package.module:name``, an ``nn.Module`` (each model starts from a copy of
    it) or a zero-argument function returning one, mapping a raw batch to (b, d) features; memaware adds the heads
    (``models.backbone_source.end_to_end_factory``). ``data`` may then be a ``RealDataset`` (``load_table``,
    ``open_dataset``: rows are loaded per batch) or ``GroupData`` (the backbone takes x's rows). Classification
    methods get
    per-group history (training accuracy from the training pass itself, logits before the step) and validation
    selection under every criterion (``FitResult.selection_reports``); ``val_inferred_groups`` (n_val,) are
    XRM-inferred groups for the ``val_gi_wga`` criterion when the method infers none. Regression methods
    (``task = "regression"``) get the loss history and train until the method says stop.

    With ``checkpoint``, the full training state (weights, optimiser, method state such as XRM's flipped labels,
    the data-order RNG, selection and history) is written there atomically every ``checkpoint_every`` epochs and/or
    once ``checkpoint_seconds`` have passed since the last write (and at the end), and a run started on an existing
    checkpoint resumes from it and ends with the same numbers as an uninterrupted one (the Gram-matrix path
    of ``engine.dual`` included: its state is saved as is).
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    data, model_factory = with_backbone(data, backbone, model, model_factory, cfg, dict(model_kwargs or {}))
    method = fresh_method(method, method_kwargs)
    check_run(method, data, cfg, model_factory, checkpoint_every)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    model_kwargs = dict(model_kwargs or {})
    saving = (checkpoint_every, checkpoint_seconds)
    earlier = run_phases(data, method, cfg, model_kwargs, model_factory, checkpoint, saving)
    run = set_up(data, method, cfg, model, model_kwargs, model_factory, val_inferred_groups, earlier)
    signature = run_signature(method, cfg, data, model_kwargs) if checkpoint is not None else {}
    saver = Checkpointer(checkpoint, checkpoint_every, checkpoint_seconds, signature)
    start, done, resumed = saver.restore(run)
    epoch = resumed if done else drive(run, saver, start)
    return finish(run, epoch, earlier, resumed, time.perf_counter() - t0)


def with_backbone(
    data: Any, backbone: Any, model: torch.nn.Module | None, model_factory: ModelFactory | None, cfg: TrainConfig,
    model_kwargs: dict[str, Any],
) -> tuple[GroupData, ModelFactory | None]:  # fmt: skip
    """``fit``'s data as ``GroupData`` and its model factory, with ``backbone`` turned into one."""
    dataset = data if hasattr(data, "load") and hasattr(data, "data") else None
    if not isinstance(data, GroupData) and dataset is None:
        raise ConfigError(
            f"fit takes GroupData or a dataset (load_table, open_dataset), got {type(data).__name__}"
        )
    if backbone is None:
        if dataset is not None and model_factory is None:
            raise ConfigError(
                f"{dataset!r} holds raw {dataset.modality} rows: pass backbone= (a network mapping them to (b, d) "
                "features) or model_factory="
            )
        return (dataset.data if dataset is not None else data), model_factory
    if model is not None or model_factory is not None:
        raise ConfigError("give one of backbone=, model= and model_factory=")
    unused = sorted(k for k in ("hidden", "activation") if model_kwargs.get(k))
    if unused:
        raise ConfigError(f"model_kwargs {', '.join(unused)} shape memaware's own head; not with backbone=")
    from ..models.backbone_source import end_to_end_factory

    factory = end_to_end_factory(
        data, backbone, seed=cfg.seed, bias=bool(model_kwargs.get("bias", False)), device=cfg.device
    )
    return (dataset.data if dataset is not None else data), factory


def check_model(model: torch.nn.Module, method: Method, data: GroupData, cfg: TrainConfig) -> None:
    """Refuses, in one line and before any step, a model built by a factory that lacks what ``method`` needs
    (``Method.model_parts``) or whose output on two training rows is not (2, num_heads, K) (the caller's own
    models; an ``EndToEndNet`` is right by construction)."""
    missing = [part for part in method.model_parts() if not callable(getattr(model, part, None))]
    if missing:
        needs = ", ".join(method.model_parts())
        raise ConfigError(
            f"method '{method.name}' ({getattr(method, 'mode', '')}) needs a model with {needs}; "
            f"{type(model).__name__} has no {', '.join(missing)}: pass backbone= (memaware adds the heads) or build "
            "an EndToEndNet"
        )
    if isinstance(model, EndToEndNet):
        return  # memaware's heads on a backbone probed when its factory was made: (b, H, K) by construction
    rows = data.x[data.indices(TRAIN)[:2]].to(cfg.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(rows)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"model_factory's model failed on two training rows ({type(e).__name__}: {first})") from None
    finally:
        model.train(was_training)
    want = (len(rows), method.num_heads, data.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model_factory({method.num_heads}) must give a model returning (b, num_heads, K) = {want} logits on two "
            f"training rows, got {got}"
        )


def fresh_method(method: str | Method, method_kwargs: dict[str, Any]) -> Method:
    """A new instance: nothing a previous run left on a given instance (a phase-1 result, an error set) leaks in."""
    if method_kwargs and isinstance(method, Method):
        raise ConfigError("hyper-parameters go into the method: fit(data, Method(**hparams)) or fit(data, name, ...)")
    return make_method(method, **method_kwargs) if isinstance(method, str) else method.clone()


def check_run(
    method: Method, data: GroupData, cfg: TrainConfig, model_factory: ModelFactory | None, checkpoint_every: int | None
) -> None:
    """Raises ``ConfigError`` (one line) for a run that cannot go: group labels the method needs and the data lacks,
    a regression with a selection criterion, end-to-end options without a backbone, a bad checkpoint period."""
    if method.needs_train_groups and not data.has_attrs(TRAIN):
        raise ConfigError(
            f"method '{method.name}' needs training group labels (field 'a' >= 0 on split 0), the data has none"
        )
    if method.needs_val_groups and not (len(data.indices(VAL)) and data.has_attrs(VAL)):
        raise ConfigError(
            f"method '{method.name}' needs validation group labels (field 'a' >= 0 on split 1), the data has none"
        )
    if method.task == "classification" and len(train_classes := data.y[data.indices(TRAIN)].unique()) == 1:
        raise DataError(f"the training split holds one class only ({train_classes.tolist()}); a classifier needs two")
    if method.task != "classification" and cfg.selection != "last":
        raise ConfigError(f"method '{method.name}' is a regression: use selection='last'")
    if model_factory is None and (cfg.clip_grad_norm or cfg.head_dropout):
        raise ConfigError("clip_grad_norm and head_dropout apply to end-to-end runs (a backbone), not to heads alone")
    if model_factory is None and (
        cfg.precision != "fp32" or cfg.compile or cfg.channels_last == "on" or cfg.augment != "none"
    ):
        raise ConfigError(
            "precision, compile, channels_last and augment apply to end-to-end runs (a backbone), not to heads alone"
        )
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be >= 1, got {checkpoint_every}")


def run_phases(
    data: GroupData, method: Method, cfg: TrainConfig, model_kwargs: dict[str, Any],
    model_factory: ModelFactory | None, checkpoint: Path | None, saving: tuple[int | None, float | None],
) -> dict[str, FitResult]:  # fmt: skip
    """The explicit pipeline: every earlier phase is a run of this same loop (MAT: XRM first; JTT: ERM first),
    checkpointed beside the run; ``saving`` is (checkpoint_every, checkpoint_seconds)."""
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
            checkpoint_every=saving[0],
            checkpoint_seconds=saving[1],
        )
    return earlier


def set_up(
    data: GroupData, method: Method, cfg: TrainConfig, model: torch.nn.Module | None, model_kwargs: dict[str, Any],
    model_factory: ModelFactory | None, val_inferred_groups: torch.Tensor | None, earlier: dict[str, FitResult],
) -> Run:  # fmt: skip
    """The method prepared on its earlier phases, the model built and initialised, and the step machinery."""
    generator = torch.Generator().manual_seed(cfg.seed)
    train_idx = data.indices(TRAIN)
    ctx = TrainContext(data, train_idx, cfg, generator, model_kwargs, model_factory)
    method.prepare(ctx, earlier)
    if model is None:
        if model_factory is not None:
            model = model_factory(method.num_heads)
        else:
            model = build_model(data.dim, data.num_classes, num_heads=method.num_heads, seed=cfg.seed, **model_kwargs)
    if model_factory is not None:
        model.to(cfg.device)
        check_model(model, method, data, cfg)
        configure_end_to_end(model, cfg)
    init_heads_(model, cfg.init)
    x_train = data.x[train_idx].to(cfg.device)
    # a linear or MLP head follows the data's float type (float64 data trains a float64 model)
    model.to(cfg.device, dtype=x_train.dtype if x_train.is_floating_point() and model_factory is None else None)
    method.init_model(model)  # a method fitted before the loop (DFR) writes its weights here
    classify = method.task == "classification"
    selection = OnlineSelection(cfg.selection if classify else "last", data, val_inferred_groups, method)
    history = History(data, cfg.history_splits if classify else (), model, cfg.device)
    steps = single_run_steps(method, model, cfg, data, x_train, generator, model_factory is not None)
    return Run(data, method, cfg, ctx, model, generator, steps, selection, history)


def single_run_steps(
    method: Method, model: torch.nn.Module, cfg: TrainConfig, data: GroupData, x_train: torch.Tensor,
    generator: torch.Generator, end_to_end: bool,
) -> SingleRunSteps:  # fmt: skip
    """The step machinery of one run: batch size, draw or loss weights, and its ``engine.optimisation``."""
    train_idx = data.indices(TRAIN)
    n_train, num_groups, classify = len(train_idx), data.num_groups, method.task == "classification"
    # unknown attributes (-1) count in an extra bucket that History ignores
    groups = torch.where(data.a[train_idx] >= 0, data.group[train_idx], num_groups).to(cfg.device) if classify else None
    pool = n_train if method.active_positions is None else len(method.active_positions)
    bs = cfg.batch_size if 0 < cfg.batch_size < pool else pool
    weights = sampling_weights(method, cfg, data.y[train_idx])
    loss_weights = None
    if weights is not None and bs >= pool:  # full batch: the same expected loss, through the loss
        loss_weights = (weights / weights.sum() * n_train).to(x_train.dtype if x_train.is_floating_point() else None)
        weights = None
    opt = build_single(cfg, method, model, x_train, -(-pool // bs), end_to_end)
    return SingleRunSteps(
        method, model, opt.optimizer, x_train, data.y[train_idx].to(cfg.device), groups, num_groups, bs, generator,
        weights, loss_weights, opt.dual, opt.schedule, cfg.clip_grad_norm, opt.strategy == "analytic",
        grad_scaler(cfg),
    )  # fmt: skip


def drive(run: Run, saver: Checkpointer, start: int) -> int:
    """The loop from epoch ``start``: evaluations where due (also mid-epoch with ``eval_every_steps``: training
    accuracy and loss of the epoch so far), a checkpoint where due; returns the last epoch run."""
    cfg, steps, method, model = run.config, run.steps, run.method, run.model
    dual = steps.dual

    label = cfg.progress_label or method.name

    def evaluate(epoch: int) -> None:
        if dual is not None and (run.selection.active or (run.history.splits and not run.history.linear)):
            dual.materialize()
        check_finite(method.name, label, epoch, steps, model if dual is None else None)  # no NaN model evaluated
        run.history.record(epoch, *steps.train_accuracy(), steps.mean_loss(), model, method, cfg.eval_batch_size, dual)
        run.selection.update(epoch, steps.steps, model, method, cfg.eval_batch_size, cfg.device)

    model.train()
    meter = meter_for(run, start)
    try:
        epoch = run_epochs(
            steps,
            first=start,
            epochs=cfg.epochs,
            max_steps=cfg.max_steps if method.trains else -1,  # no step: one evaluation of init_model's model
            eval_every=cfg.eval_every,
            eval_every_steps=cfg.eval_every_steps,
            on_eval=evaluate,
            on_epoch_end=lambda epoch, stop: (
                check_finite(method.name, label, epoch, steps, model if dual is None else None),  # before it is saved
                saver.end_of_epoch(epoch, stop, run),
            ),
            meter=meter,
        )
    finally:
        if steps.prefetch is not None:
            steps.prefetch([])  # a batch announced but never asked for (max_steps mid-epoch): its loader stops
    run.throughput = meter.summary()
    if meter.per_image and cfg.progress:  # one line per end-to-end run (phase), on a terminal or in a log
        print(summary_line(meter.label, epoch - start + 1, run.throughput), file=sys.stderr, flush=True)
    return epoch


def finish(run: Run, epoch: int, earlier: dict[str, FitResult], resumed: int | None, seconds: float) -> FitResult:
    """The model at its selected checkpoint (eval mode), inferred validation groups, curves and outputs."""
    data, cfg, method, model, selection = run.data, run.config, run.method, run.model, run.selection
    if run.steps.dual is not None:
        run.steps.dual.materialize()
    if selection.best_state is not None:
        model.load_state_dict(selection.best_state)
    model.eval()
    inferred = selection.inferred
    if run.classify and inferred is None:
        val = data.indices(VAL)
        logits = all_logits(model, data.x[val], cfg.eval_batch_size, cfg.device).cpu()
        inferred = method.infer_groups(logits, data.y[val], "val")
    curves = (
        run.history.curves(method, model)
        if run.classify
        else {"epoch": run.history.epochs, "loss": torch.stack(run.history.rec["loss"]).cpu().tolist()}
    )
    return FitResult(
        model=model,
        method=method,
        config=cfg,
        selection=selection.criterion or "last",
        selected_epoch=selection.best_epoch or epoch,
        epochs_run=epoch,
        history=curves,
        outputs=method.outputs(model, run.ctx),
        val_inferred_groups=inferred,
        seconds=seconds,
        selection_reports=selection.reports(),
        resumed_from=resumed,
        phases=earlier,
        evaluations=selection.log,
        throughput=run.throughput,
    )


__all__ = ["FitResult", "Run", "fit", "plain_linear_forward", "with_backbone", "check_model", "fresh_method",
           "check_run", "run_phases", "set_up", "drive", "finish"]  # fmt: skip
