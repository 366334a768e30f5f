"""The one training loop. Every method plugs in through ``memaware.methods.Method``; this module owns data
order, optimisation, evaluation, history and checkpoint selection on the validation split."""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .data.groups import TEST, TRAIN, VAL, GroupData, group_name
from .errors import ConfigError
from .methods import Method, TrainContext, make_method
from .metrics import group_correct, group_report
from .models import MultiHeadNet, build_model
from .optim import make_optimizer

SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}
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
    """A trained model with its method, per-epoch history and the checkpoint chosen on validation."""

    model: MultiHeadNet
    method: Method
    config: TrainConfig
    selection: str  # the criterion actually used
    selected_epoch: int
    history: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    val_inferred_groups: torch.Tensor | None = None
    seconds: float = 0.0

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, K) logits of the predicting head (eval mode, batched)."""
        return _predict(self.model, self.method, x, self.config)

    def evaluate(self, data: GroupData, split: str) -> dict:
        """``metrics.group_report`` of the selected checkpoint on ``split`` ('train', 'val' or 'test')."""
        idx = data.indices(SPLITS[split])
        pred = self.predict_logits(data.x[idx]).argmax(dim=1)
        return group_report(pred, data.y[idx], data.a[idx], data.num_classes, data.num_attrs)


def _all_logits(model: MultiHeadNet, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat(
            [
                model(x[i : i + cfg.eval_batch_size].to(cfg.device))
                for i in range(0, len(x), cfg.eval_batch_size)
            ]
        )
    model.train(was_training)
    return out


def _predict(model: MultiHeadNet, method: Method, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return method.predict_logits(_all_logits(model, x, cfg)).cpu()


def _selection_score(
    criterion: str,
    pred: torch.Tensor,
    y: torch.Tensor,
    group: torch.Tensor | None,
    num_groups: int,
    num_classes: int,
) -> float:
    correct = pred == y
    if criterion == "val_avg":
        return float(correct.float().mean())
    if criterion == "val_worst_class":
        group, num_groups = y, num_classes
    hits, counts = group_correct(correct, group, num_groups)
    present = counts > 0
    return float((hits[present] / counts[present]).min())


def fit(
    data: GroupData,
    method: str | Method,
    config: TrainConfig | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **method_kwargs: Any,
) -> FitResult:
    """Trains ``method`` on the training split of ``data`` and selects a checkpoint on validation.

    ``model_kwargs`` go to ``models.build_model`` (hidden, bias, activation); ``method_kwargs`` to the method.
    History: for every evaluation point, training accuracy per group from the training pass itself (logits before
    the step, no extra forward pass) and per-group accuracy on each split in ``config.history_splits``.
    """
    cfg = config or TrainConfig()
    t0 = time.perf_counter()
    method = make_method(method, **method_kwargs) if isinstance(method, str) else method
    if method.needs_train_groups and not data.has_attrs(TRAIN):
        raise ConfigError(
            f"method '{method.name}' needs training group labels (field 'a'), the data has none"
        )
    model_kwargs = dict(model_kwargs or {})
    generator = torch.Generator().manual_seed(cfg.seed)
    train_idx = data.indices(TRAIN)
    ctx = TrainContext(
        data=data, train_idx=train_idx, config=cfg, generator=generator, model_kwargs=model_kwargs
    )
    method.prepare(ctx)
    model = build_model(data.dim, data.num_classes, num_heads=method.num_heads, seed=cfg.seed, **model_kwargs)
    model.to(cfg.device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)

    # --- selection criterion -------------------------------------------------------------------------------
    criterion = cfg.selection
    val_idx = data.indices(VAL)
    if criterion == "auto":
        criterion = "val_wga" if data.has_attrs(VAL) else "val_gi_wga"
    if criterion == "val_wga" and not data.has_attrs(VAL):
        raise ConfigError("selection 'val_wga' needs validation attributes (field 'a' >= 0 on split 1)")
    x_val, y_val = data.x[val_idx], data.y[val_idx]
    val_group = data.group[val_idx]

    x_train = data.x[train_idx].to(cfg.device)
    y_train = data.y[train_idx].to(cfg.device)
    n_train = len(train_idx)
    g_train = data.group[train_idx].to(cfg.device)
    num_groups = data.num_groups
    bs = cfg.batch_size if 0 < cfg.batch_size < n_train else n_train
    hist_x = {s: data.x[data.indices(SPLITS[s])] for s in cfg.history_splits}
    hist_g = {s: data.group[data.indices(SPLITS[s])] for s in cfg.history_splits}
    hist_y = {s: data.y[data.indices(SPLITS[s])] for s in cfg.history_splits}

    rec: dict[str, list[torch.Tensor]] = {"train": [], "loss": [], **{s: [] for s in cfg.history_splits}}
    epochs_rec: list[int] = []
    best_score, best_epoch, best_state = -float("inf"), cfg.epochs, None
    val_groups_best: torch.Tensor | None = None
    linear = bool(cfg.history_splits) and not model.backbone_parameters()
    snapshots: list[list[torch.Tensor]] = []
    show = cfg.progress and sys.stderr.isatty()
    model.train()
    for epoch in tqdm(
        range(1, cfg.epochs + 1), desc=cfg.progress_label or method.name, disable=not show, leave=False
    ):
        hits = torch.zeros(num_groups, device=cfg.device)
        loss_sum = torch.zeros((), device=cfg.device)
        if bs == n_train:
            batches = [None]
        else:
            perm = torch.randperm(n_train, generator=generator)
            batches = list(perm.split(bs))
        for pos in batches:
            if pos is None:
                xb, yb, gb = x_train, y_train, g_train
                pos = torch.arange(n_train)
            else:
                pos_d = pos.to(cfg.device)
                xb, yb, gb = x_train[pos_d], y_train[pos_d], g_train[pos_d]
            logits = method.forward(model, xb)
            loss = method.loss(logits, pos, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            detached = logits.detach()
            method.after_step(detached, pos, yb)
            correct = method.predict_logits(detached).argmax(dim=1) == yb
            hits += group_correct(correct, gb, num_groups)[0]
            loss_sum += loss.detach() * len(yb)
        if epoch % cfg.eval_every and epoch != cfg.epochs:
            continue
        epochs_rec.append(epoch)
        rec["train"].append(hits)
        rec["loss"].append(loss_sum / n_train)
        if linear:
            # a linear model's history is evaluated from weight snapshots in one GEMM after training
            snapshots.append([p.detach().clone() for p in model.heads.parameters()])
        else:
            for s in cfg.history_splits:
                pred = _predict(model, method, hist_x[s], cfg).argmax(dim=1)
                rec[s].append(group_correct(pred == hist_y[s], hist_g[s], num_groups)[0])
        if criterion == "last":
            continue
        val_logits = _all_logits(model, x_val, cfg).cpu()
        pred = method.predict_logits(val_logits).argmax(dim=1)
        inferred = method.infer_groups(val_logits, y_val, "val")
        if criterion == "val_gi_wga" and inferred is None:
            criterion = "val_avg"  # the method infers no groups and validation has no attributes
        group, ng = (inferred, 2 * data.num_classes) if criterion == "val_gi_wga" else (val_group, num_groups)
        score = _selection_score(criterion, pred, y_val, group, ng, data.num_classes)
        if score >= best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
            val_groups_best = inferred

    for s in cfg.history_splits if linear else ():
        rec[s] = _snapshot_hits(
            snapshots,
            method,
            hist_x[s].to(cfg.device),
            hist_y[s].to(cfg.device),
            hist_g[s].to(cfg.device),
            num_groups,
            model,
        )
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if val_groups_best is None:
        val_groups_best = method.infer_groups(_all_logits(model, x_val, cfg).cpu(), y_val, "val")
    outputs = method.outputs(model, ctx)
    history = _history(epochs_rec, rec, data, cfg, train_idx)
    return FitResult(
        model=model,
        method=method,
        config=cfg,
        selection=criterion,
        selected_epoch=best_epoch,
        history=history,
        outputs=outputs,
        val_inferred_groups=val_groups_best,
        seconds=time.perf_counter() - t0,
    )


@torch.no_grad()
def _snapshot_hits(
    snapshots: list[list[torch.Tensor]],
    method: Method,
    x: torch.Tensor,
    y: torch.Tensor,
    group: torch.Tensor,
    num_groups: int,
    model: MultiHeadNet,
) -> list[torch.Tensor]:
    """Per-group hits (G,) for each snapshot of a linear model's head weights (T of them), T at a time in one GEMM."""
    H, K = model.heads.num_heads, model.heads.num_classes
    chunk = max(1, (1 << 24) // max(1, len(x) * H * K))  # bound the (n, T, H*K) logits to ~64 MB
    hits = []
    for start in range(0, len(snapshots), chunk):
        block = snapshots[start : start + chunk]
        w = torch.cat([s[0] for s in block])  # (T*H*K, d)
        logits = x @ w.t()
        if len(block[0]) > 1:  # bias
            logits += torch.cat([s[1] for s in block])
        t = len(block)
        logits = logits.view(len(x), t, H, K).transpose(0, 1).reshape(t * len(x), H, K)
        correct = (method.predict_logits(logits).argmax(dim=1).view(t, len(x)) == y).float()
        g = group.clamp_min(0)
        per_group = torch.zeros(t, num_groups, device=x.device).index_add_(1, g, correct * (group >= 0))
        hits.extend(per_group.unbind(0))
    return hits


def _history(
    epochs: list[int],
    rec: dict[str, list[torch.Tensor]],
    data: GroupData,
    cfg: TrainConfig,
    train_idx: torch.Tensor,
) -> dict[str, Any]:
    """Turns the on-device per-group hit counts into accuracy curves (one host transfer at the end)."""
    G, A = data.num_groups, data.num_attrs
    out: dict[str, Any] = {"epoch": epochs, "loss": torch.stack(rec["loss"]).cpu().tolist()}
    # majority = a == y; only meaningful when attribute and label share their values
    comparable = data.num_attrs == data.num_classes
    group_y = torch.arange(G) // A
    group_a = torch.arange(G) % A
    for s in ["train", *cfg.history_splits]:
        hits = torch.stack(rec[s]).cpu()  # (T, G)
        counts = torch.bincount(
            data.group[data.indices(SPLITS[s])].clamp_min(0)[data.a[data.indices(SPLITS[s])] >= 0],
            minlength=G,
        ).float()
        curves: dict[str, Any] = {}
        if comparable:
            for name, mask in (("majority", group_y == group_a), ("minority", group_y != group_a)):
                n = counts[mask].sum()
                curves[name] = (hits[:, mask].sum(1) / n).tolist() if n > 0 else []
        curves["groups"] = {
            group_name(i, A): (hits[:, i] / counts[i]).tolist() for i in range(G) if counts[i] > 0
        }
        out[s] = curves
    return out
