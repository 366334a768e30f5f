"""``train_members``: many runs of a method trained at once, each equal to ``engine.fit`` of the same run.

A ``Member`` is what ``fit(data, method, config, model_kwargs=..., val_inferred_groups=...)`` would train, optionally
on a subset of the training split (``rows``: the memorization audit's half-sample models). ``train_members`` runs
the members' phases first (MAT's XRM, JTT's ERM), themselves as batched members, each distinct phase run once for
all the members that share it; then prepares every member's own method on its own context (its seed's generator,
its training positions) with its phase results, and trains them in one batched program (``Program``) through the
engine's one loop. It returns one ``FitResult`` per member.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ...data.groups import TRAIN, GroupData
from ...errors import ConfigError
from ...methods import Method, TrainContext
from ...methods.batched import BatchedLoss
from ..config import TrainConfig
from ..optimisation import plain_linear_forward
from ..result import FitResult
from .layout import Prepared
from .program import Program

# a subclass that redefines one of these no longer has its ancestor's hand-derived gradient
_FAST_PATH_HOOKS = ("loss", "after_step", "predict_logits", "forward", "should_stop")


@dataclass
class Member:
    """One run: ``method`` (a fresh copy is trained) with ``config`` and ``model_kwargs`` (``build_model``'s hidden,
    bias, activation) on ``data``'s training split, or only on its positions ``rows`` (sorted, into the training
    split: as ``fit`` on the data with the other training examples removed); ``external_groups`` (n_val,): an XRM
    run's inferred validation groups for ``val_gi_wga``, as ``fit``'s ``val_inferred_groups``."""

    method: Method
    config: TrainConfig
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    rows: torch.Tensor | None = None
    external_groups: torch.Tensor | None = None


def fast_path(method: Method) -> type[BatchedLoss] | None:
    """The method's declared fast path (``Method.batched_loss``) if it applies to this instance and no subclass
    below the declaring class changed what it computes; else None."""
    cls = type(method)
    declaring = next((k for k in cls.__mro__ if "batched_loss" in k.__dict__), None)
    fast = None if declaring is None else declaring.__dict__["batched_loss"]
    if fast is None:
        return None
    for klass in cls.__mro__:
        if klass is declaring:
            break
        if any(hook in klass.__dict__ for hook in _FAST_PATH_HOOKS):
            return None
    return fast if fast.applies(method) else None


def trainable(method: Method, model_kwargs: dict[str, Any] | None = None) -> bool:
    """Whether the batched mode trains ``method``: a classification method with a fast path, one whose ``forward``
    is ``model(x)`` (a linear head: ``engine.plain_linear_forward``; a network: no own ``forward``), or one that
    takes no step (``trains = False``, DFR: its phases train batched, its model is evaluated once)."""
    if method.task != "classification":
        return False
    if not method.trains:
        return True
    if fast_path(method) is not None:
        return True
    if (model_kwargs or {}).get("hidden"):
        return type(method).forward is Method.forward
    return plain_linear_forward(type(method))


def _fingerprint(value: Any) -> str:
    """A stable text of hyper-parameters, configs and tensors (tensors by content digest)."""
    if isinstance(value, torch.Tensor):
        return "tensor:" + hashlib.sha1(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_fingerprint(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_fingerprint(v) for v in value) + "]"
    return repr(value)


def _run_key(m: Member) -> str:
    """What makes two phase runs the same run (progress labels aside)."""
    cfg = {k: v for k, v in dataclasses.asdict(m.config).items() if k not in ("progress", "progress_label")}
    method = (type(m.method).__module__, type(m.method).__qualname__, m.method.get_params())
    return _fingerprint([method, cfg, m.model_kwargs, m.rows])


def _program_key(m: Member) -> str:
    """What members of one program share: method class, heads, fast path, architecture and the step shape."""
    cfg = m.config
    shape = (
        cfg.batch_size, cfg.max_steps, cfg.optimizer, cfg.class_balanced, cfg.eval_every, cfg.eval_every_steps,
        cfg.device,
    )  # fmt: skip
    kind = (type(m.method).__module__, type(m.method).__qualname__, m.method.num_heads, fast_path(m.method))
    return _fingerprint([kind, shape, m.model_kwargs])


def _phases(data: GroupData, members: list[Member], progress: bool) -> list[dict[str, FitResult]]:
    """Every member's earlier runs (``Method.phases``, as ``fit`` configures them), each distinct run trained once,
    batched with the other phase runs it can share a program with."""
    earlier: list[dict[str, FitResult]] = [{} for _ in members]
    unique: dict[str, Member] = {}
    wanted: list[tuple[int, str, str]] = []
    for c, m in enumerate(members):
        for phase in m.method.phases():
            cfg = dataclasses.replace(
                m.config, selection="last", history_splits=(), progress_label=phase.label or phase.name
            )
            run = Member(phase.method, dataclasses.replace(cfg, **phase.config), m.model_kwargs, m.rows)
            key = _run_key(run)
            unique.setdefault(key, run)
            wanted.append((c, phase.name, key))
    programs: dict[str, list[str]] = {}
    for key, run in unique.items():
        programs.setdefault(_program_key(run), []).append(key)
    done: dict[str, FitResult] = {}
    for keys in programs.values():
        runs = [unique[k] for k in keys]
        label = runs[0].config.progress_label
        for key, res in zip(keys, train_members(data, runs, label=label, progress=progress), strict=True):
            done[key] = res
    for c, name, key in wanted:
        earlier[c][name] = done[key]
    return earlier


def _check(data: GroupData, members: list[Member]) -> None:
    keys = set()
    train_n = int((data.split == TRAIN).sum())
    for m in members:
        name = m.method.name
        if not trainable(m.method, m.model_kwargs):
            raise ConfigError(f"method '{name}' cannot be trained batched (a regression, or an own forward)")
        if m.config.clip_grad_norm or m.config.head_dropout:
            raise ConfigError("clip_grad_norm and head_dropout apply to end-to-end runs, not to heads alone")
        if m.method.needs_train_groups and not data.has_attrs(TRAIN):
            raise ConfigError(
                f"method '{name}' needs training group labels (field 'a' >= 0 on split 0), the data has none"
            )
        rows = m.rows
        if rows is not None and (
            len(rows) == 0 or int(rows.max()) >= train_n or int(rows.min()) < 0 or not torch.equal(rows, rows.unique())
        ):
            raise ConfigError(
                f"member training positions must be sorted, distinct, non-empty and within the {train_n} training rows"
            )
        keys.add(_program_key(m))
    if len(keys) != 1:
        raise ConfigError(
            "members of one batched program need one method class, architecture, batch size, max_steps, optimizer, "
            "class balance, eval_every, eval_every_steps and device"
        )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while members train (restored after, also on errors). A batched step
    allocates dozens of small tensors and the evaluation logs keep thousands: the collector's passes over them took
    ~10 % of a 30-member group's time (BENCHMARKS.md). Cycles a method might create are collected afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def train_members(
    data: GroupData,
    members: list[Member],
    *,
    with_outputs: bool = True,
    label: str = "",
    progress: bool = False,
) -> list[FitResult]:
    """Trains every member (see ``Member``) in one batched program and returns its ``FitResult`` (model with the
    selected checkpoint, method, criterion, selected epoch, reports of every criterion, evaluation log, phases;
    ``history`` is empty; ``outputs`` only with ``with_outputs``; ``seconds`` the call's time per member).

    Member c equals ``fit(data restricted to rows_c, clone of method_c, config_c, model_kwargs=...,
    val_inferred_groups=external_c)`` up to float rounding: the same batches, the same draws, the same initial
    weights and the same update rules (tests/test_vectorized.py checks equality on float64 data). Members may
    differ in seed, lr, momentum, weight decay, epochs, selection and method hyper-parameters, not in what
    ``_program_key`` names.
    """
    if not members:
        return []
    with _collector_paused():
        return _train_members(data, members, with_outputs, label, progress)


def _train_members(
    data: GroupData, members: list[Member], with_outputs: bool, label: str, progress: bool
) -> list[FitResult]:
    t0 = time.perf_counter()
    members = [dataclasses.replace(m, method=m.method.clone(), model_kwargs=dict(m.model_kwargs)) for m in members]
    _check(data, members)
    earlier = _phases(data, members, progress)
    train_idx = data.indices(TRAIN)
    prepared = []
    for m, phases in zip(members, earlier, strict=True):
        ctx = TrainContext(
            data=data,
            train_idx=train_idx if m.rows is None else train_idx[m.rows],
            config=m.config,
            generator=torch.Generator().manual_seed(m.config.seed),
            model_kwargs=m.model_kwargs,
        )
        m.method.prepare(ctx, phases)
        prepared.append(Prepared(m.method, m.config, ctx, m.rows))
    fast = fast_path(members[0].method)
    program = Program(data, prepared, members[0].model_kwargs, fast, [m.external_groups for m in members])
    name = members[0].method.name
    progress = progress or any(m.config.progress for m in members)
    program.run(label=label or f"{name} x{len(members)} (batched)", progress=progress)
    return program.results(earlier, with_outputs, t0)
