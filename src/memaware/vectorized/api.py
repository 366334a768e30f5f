"""``train_many`` / ``execute_many``: group specs, build programs, run their phases, write results."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.groups import TEST, TRAIN, VAL, GroupData
from ..errors import ConfigError
from ..methods import Method, make_method
from ..methods.balancing import inverse_frequency_weights
from ..methods.jtt import upweight
from ..methods.mat import mat_log_shift
from ..methods.xrm import cross_mistake_groups
from ..tracking import CRITERIA, Selector
from ..train import TrainConfig
from ._common import DATA_KEYS, SHAPE_KEYS, SUPPORTED_METHODS
from .program import _Member, _Program, _Shape
from .selection import _argmax, _predict, _Reports, _Selection


# ---- which specs can share a program ---------------------------------------------------------------------------
def _hparams(spec: dict[str, Any]) -> dict[str, Any]:
    from ..runner import resolve_hparams  # lazy: runner imports train, keep this module importable on its own

    return resolve_hparams(spec.get("method", ""), spec.get("hparams"))


def group_key(spec: dict[str, Any]) -> tuple:
    """What specs must share to be trained by one ``train_many`` call: method, data, device, shape hyper-parameters
    (``SHAPE_KEYS``) and MAT's mode. Seeds, lr, weight decay, momentum and method hyper-parameters may differ."""
    method = spec.get("method")
    try:
        hp = _hparams(spec)
    except ConfigError:
        hp = dict(spec.get("hparams") or {})
    shape = tuple(json.dumps(hp.get(k), sort_keys=True) for k in SHAPE_KEYS)
    data = tuple(json.dumps(spec.get(k)) for k in DATA_KEYS)
    return (method, data, spec.get("device") or "cpu", shape, hp.get("mode"))


def supported(spec: dict[str, Any]) -> bool:
    """Whether ``train_many`` can train ``spec``: a supported method on a features file (``data``), a linear head
    or one hidden layer, MAT in two-phase form without given held-out logits, valid hyper-parameters, an available
    device. Anything else goes through ``runner.execute``."""
    method = spec.get("method")
    if method not in SUPPORTED_METHODS or spec.get("dataset") is not None:
        return False
    try:
        hp = _hparams(spec)
    except ConfigError:
        return False
    hidden = hp.get("hidden") or []
    if not isinstance(hidden, list | tuple) or len(hidden) > 1:
        return False
    if method == "mat" and hp.get("mode", "two-phase") != "two-phase":
        return False
    device = spec.get("device") or "cpu"
    return device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())


@dataclass
class _Run:
    spec: dict[str, Any]
    hp: dict[str, Any]
    cfg: TrainConfig
    method: Method
    selector: Selector  # shared by the runs with the same criterion: only its resolved criterion and groups are read
    external: torch.Tensor | None  # (n_val,) XRM-inferred validation groups for val_gi_wga, or None


def _config(spec: dict[str, Any], hp: dict[str, Any]) -> TrainConfig:
    """The TrainConfig ``runner.execute`` builds for ``spec`` (its checks included)."""
    from ..runner import train_config

    return train_config(spec, hp)


def _make_run(
    data: GroupData,
    spec: dict[str, Any],
    inferred_groups: dict[int, torch.Tensor] | None,
    selectors: dict[str, Selector],
) -> _Run:
    from ..runner import SPEC_KEYS, method_hparam_defaults
    from ..runner import inferred_groups as read_inferred_groups

    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"run spec has unknown key(s) {', '.join(unknown)}")
    name = spec.get("method")
    hp = _hparams(spec)
    cfg = _config(spec, hp)
    method = make_method(name, **{k: hp[k] for k in method_hparam_defaults(name)})
    if method.needs_train_groups and not data.has_attrs(TRAIN):
        raise ConfigError(f"method '{name}' needs training group labels (field 'a' >= 0 on split 0), the data has none")
    if inferred_groups is not None and cfg.seed in inferred_groups:
        external = torch.as_tensor(inferred_groups[cfg.seed]).long()
    else:
        external = read_inferred_groups(spec.get("inferred_groups"), data)
    # the Selector's checks and its resolution of "auto", once per criterion (building one copies the splits)
    if cfg.selection not in selectors:
        selectors[cfg.selection] = Selector(cfg.selection, data)
    selector = selectors[cfg.selection]
    n_val = len(selector.y)
    if selector.criterion != "last" and external is not None and len(external) != n_val:
        raise ConfigError(f"inferred validation groups have {len(external)} entries, the validation split {n_val}")
    return _Run(spec, hp, cfg, method, selector, external)


def _shape_of(run: _Run) -> _Shape:
    cfg, hp = run.cfg, run.hp
    return _Shape(
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        optimizer=cfg.optimizer,
        batch_size=cfg.batch_size,
        class_balanced=cfg.class_balanced,
        eval_every=cfg.eval_every,
        hidden=tuple(int(h) for h in hp["hidden"]),
        bias=bool(hp["bias"]),
        device=cfg.device,
    )


def _phase1_keys(runs: list[_Run]) -> tuple[list[tuple], list[int]]:
    """Distinct (seed, lr, weight decay, momentum) of the runs and each run's index into them: runs that differ only
    in method hyper-parameters train the same first phase (MAT's XRM, JTT's ERM)."""
    keys: dict[tuple, int] = {}
    index = []
    for r in runs:
        key = (r.cfg.seed, r.cfg.lr, r.cfg.weight_decay, r.cfg.momentum)
        index.append(keys.setdefault(key, len(keys)))
    return list(keys), index


def _member(key: tuple, **extra: Any) -> _Member:
    seed, lr, wd, mom = key
    return _Member(seed=seed, lr=lr, weight_decay=wd, momentum=mom, **extra)


def _mat_phase1(data: GroupData, shape: _Shape, runs: list[_Run], progress: bool) -> None:
    """XRM to the end for every distinct (seed, lr, wd, momentum), as ``MAT._run_phase1``; sets each run's
    ``heldout_logits``, ``val_inferred_groups`` and ``shift`` (paper eq. 7, per member temperature)."""
    keys, index = _phase1_keys(runs)
    prog = _Program(data, shape, [_member(k) for k in keys], "xrm", prepare="xrm", num_heads=2)
    prog.run(label="XRM phase 1 (vectorized)", progress=progress)
    train_idx, val_idx = data.indices(TRAIN), data.indices(VAL)
    logits = prog.logits(data.x[train_idx]).cpu()  # (C1, 2, K, n)
    val_logits = prog.logits(data.x[val_idx]).cpu()
    held_out = 1 - prog.held_in.cpu()  # (S, n) per stream
    rows = torch.arange(len(train_idx))
    y = data.y[train_idx]
    for c, run in enumerate(runs):
        i = index[c]
        s = int(prog.slot[i]) // prog.M
        run.method.heldout_logits = logits[i].permute(2, 0, 1)[rows, held_out[s]].float()  # heldout_logits_pass
        run.method.val_inferred_groups = cross_mistake_groups(val_logits[i].permute(2, 0, 1), data.y[val_idx])
        run.method.shift = mat_log_shift(run.method.heldout_logits, y, run.method.temperature, data.num_classes)


def _jtt_phase1(data: GroupData, shape: _Shape, runs: list[_Run], progress: bool) -> None:
    """ERM for T_c epochs per run (one program to the largest T; each run's error set read off at its own T, or
    where max_steps stops the loop first), as ``JTT.prepare``; sets each run's ``errors``."""
    keys, index = _phase1_keys(runs)
    wanted: dict[int, set[int]] = {}
    for c, run in enumerate(runs):
        wanted.setdefault(index[c], set()).add(run.method.T)
    prog = _Program(data, shape, [_member(k) for k in keys], "ce")
    train_idx = data.indices(TRAIN)
    y = data.y[train_idx]
    errors: dict[tuple[int, int], torch.Tensor] = {}

    def snapshot(epoch: int, last: bool) -> None:
        due = [(i, t) for i, ts in wanted.items() for t in ts if t == epoch or (last and t > epoch)]
        if not due:
            return
        wrong = _argmax(prog.logits(data.x[train_idx])[:, 0], dim=1).cpu() != y  # (C1, n)
        for i, t in due:
            errors[(i, t)] = wrong[i].clone()

    epochs = max(r.method.T for r in runs)
    prog.run(epochs=epochs, on_epoch=snapshot, label="JTT identification (vectorized)", progress=progress)
    for c, run in enumerate(runs):
        run.method.errors = errors[(index[c], run.method.T)]


def _main_members(data: GroupData, runs: list[_Run]) -> list[_Member]:
    members = []
    group_train = data.group[data.indices(TRAIN)]
    for r in runs:
        m = _member((r.cfg.seed, r.cfg.lr, r.cfg.weight_decay, r.cfg.momentum))
        name = r.method.name
        if name == "rwg":  # Idrissi et al. 2022: draw with probability 1 / |group|
            m.example_weights = inverse_frequency_weights(group_train)
        elif name == "jtt":  # Liu et al. 2021: the error set upweighted by lambda_up
            m.example_weights = upweight(r.method.errors, r.method.lambda_up)
        elif name == "groupdro":
            m.eta = float(r.method.eta)
        elif name == "mat":
            m.shift = r.method.shift
        members.append(m)
    return members


def train_many(
    data: GroupData,
    specs: list[dict[str, Any]],
    inferred_groups: dict[int, torch.Tensor] | None = None,
    progress: bool = False,
    *,
    with_inferred_groups: bool = False,
    keep_models: bool = False,
) -> list[dict[str, Any]] | list[tuple[dict[str, Any], torch.Tensor | None, dict[str, torch.Tensor] | None]]:
    """Trains ``specs`` (all with the same ``group_key``, each ``supported``) on ``data`` in one batched program.

    Returns per spec the dict ``runner.execute`` returns (results.json's keys: spec, method, uses_train_groups,
    uses_val_groups, selection, selected_epoch, val, test, criteria, hparams, data, epochs_run, resumed_from=None,
    seconds = the batch's wall time / len(specs)) plus ``"vectorized": True``. ``inferred_groups`` maps a seed to
    (n_val,) XRM-inferred validation groups for the ``val_gi_wga`` criterion of methods that infer none (else a
    spec's ``inferred_groups`` file is read, as the runner does). With ``with_inferred_groups`` each item is
    (result, val_inferred_groups (n_val,) or None, model state dict or None (``keep_models``: the selected
    checkpoint as a ``MultiHeadNet`` state dict)), the extra outputs ``runner.execute`` writes to files.
    """
    if not specs:
        return []
    t0 = time.perf_counter()
    for spec in specs:
        if not supported(spec):
            raise ConfigError(f"train_many cannot train spec {json.dumps(spec, sort_keys=True)[:200]}")
    keys = {group_key(s) for s in specs}
    if len(keys) != 1:
        raise ConfigError("train_many needs specs of one method, data and shape (see vectorized.group_key)")
    selectors: dict[str, Selector] = {}
    runs = [_make_run(data, spec, inferred_groups, selectors) for spec in specs]
    name, shape = runs[0].method.name, _shape_of(runs[0])
    if name == "mat":
        _mat_phase1(data, shape, runs, progress)
    elif name == "jtt":
        _jtt_phase1(data, shape, runs, progress)
    loss = {"xrm": "xrm", "groupdro": "groupdro"}.get(name, "ce")
    prepare = {"xrm": "xrm", "subg": "subg"}.get(name)
    prog = _Program(data, shape, _main_members(data, runs), loss, prepare, num_heads=2 if name == "xrm" else 1)
    selection = _Selection(data, runs, name, keep_models)
    phase1 = [r.method.val_inferred_groups for r in runs] if name == "mat" else None
    epoch = prog.run(
        on_eval=lambda e: selection.update(e, prog, phase1),
        label=f"{name} x{len(runs)} (vectorized)",
        progress=progress,
    )
    return _results(data, runs, prog, selection, phase1, epoch, t0, with_inferred_groups, keep_models)


def _results(
    data: GroupData,
    runs: list[_Run],
    prog: _Program,
    selection: _Selection,
    phase1: list[torch.Tensor | None] | None,
    epoch: int,
    t0: float,
    with_inferred_groups: bool,
    keep_models: bool,
) -> list:
    from ..runner import describe_data

    name = runs[0].method.name
    k, a = data.num_classes, data.num_attrs
    final: dict[str, Any] = {}

    def final_eval() -> dict[str, Any]:  # the last epoch's model, for runs without a chosen checkpoint
        if not final:
            for split, idx in (("val", data.indices(VAL)), ("test", data.indices(TEST))):
                logits = prog.logits(data.x[idx])
                final[split + "_logits"] = logits
                final[split] = _Reports(_predict(name, logits).cpu(), data.y[idx], data.a[idx], k, a)
        return final

    seconds = (time.perf_counter() - t0) / len(runs)
    out = []
    for c, run in enumerate(runs):
        criterion = selection.criteria[c]
        reports = {crit: selection.best[c][crit] for crit in CRITERIA if crit in selection.best[c]}
        chosen = reports.get(criterion)
        if name == "groupdro":
            run.method.q = prog.member_q(c)
        elif name == "subg":
            s = int(prog.slot[c]) // prog.M
            run.method.active_positions = prog.streams[s].active
        res = {
            "spec": run.spec,
            "method": name,
            "uses_train_groups": bool(run.method.needs_train_groups),
            "uses_val_groups": criterion == "val_wga",
            "selection": criterion,
            "selected_epoch": selection.best_epoch[c] or epoch,
            "val": chosen["val"] if chosen else final_eval()["val"][c],
            "test": chosen["test"] if chosen else final_eval()["test"][c],
            "criteria": reports,
            "hparams": {**run.hp, **run.method.describe()},
            "data": describe_data(run.spec, data, None),
            "epochs_run": epoch,
            "resumed_from": None,
            "seconds": seconds,
            "vectorized": True,
        }
        if not with_inferred_groups:
            out.append(res)
            continue
        inferred = selection.inferred[c]
        has_best = selection.best_epoch[c] is not None
        if inferred is None and name == "xrm":  # fit: infer from the model it ends with
            logits = final_eval()["val_logits"][c] if not has_best else None
            y_val = data.y[data.indices(VAL)]
            inferred = None if logits is None else cross_mistake_groups(logits.cpu().permute(2, 0, 1), y_val)
        if inferred is None and phase1 is not None:
            inferred = phase1[c]
        state = None
        if keep_models:
            state = selection.best_state[c] if has_best else prog.member_state(c)
        out.append((res, inferred, state))
    return out


# ---- files: the counterpart of runner.execute for many runs ---------------------------------------------------
def execute_many(
    specs: Sequence[dict[str, Any]], run_dirs: Sequence[str | Path], progress: bool = False
) -> list[dict[str, Any]]:
    """Trains every run ``specs[i]`` into ``run_dirs[i]`` like ``runner.execute`` (results.json, inferred_groups.npz,
    model.pt with ``save_model``), the supported ones batched by ``group_key`` through ``train_many``, the others one
    at a time. Runs whose results.json exists are returned as they are. Every batch is attempted; the first error is
    raised at the end."""
    from ..artifacts import atomic_writer, write_json
    from ..runner import checkpoints, execute, load_spec_data

    if len(specs) != len(run_dirs):
        raise ConfigError(f"{len(specs)} specs but {len(run_dirs)} run directories")
    dirs = [Path(d) for d in run_dirs]
    results: list[dict[str, Any] | None] = [None] * len(specs)
    batches: dict[tuple, list[int]] = {}
    error: BaseException | None = None
    for i, (spec, d) in enumerate(zip(specs, dirs, strict=True)):
        if (d / "results.json").exists():
            results[i] = json.loads((d / "results.json").read_text())
        elif supported(spec):
            batches.setdefault(group_key(spec), []).append(i)
        else:
            try:
                results[i] = execute(spec, d, progress=progress)
            except Exception as e:  # the other runs still train
                error = error or e
    cache: dict[str, GroupData] = {}
    for idx in batches.values():
        try:
            spec0 = specs[idx[0]]
            source = json.dumps([spec0.get(k) for k in DATA_KEYS])
            if source not in cache:
                cache[source] = load_spec_data(spec0)[0]
            trained = train_many(
                cache[source],
                [specs[i] for i in idx],
                progress=progress,
                with_inferred_groups=True,
                keep_models=any(specs[i].get("save_model") for i in idx),
            )
        except Exception as e:  # the other batches still train
            error = error or e
            continue
        for i, (res, inferred, state) in zip(idx, trained, strict=True):
            d = dirs[i]
            if inferred is not None:
                groups = inferred.numpy().astype(np.int64)
                atomic_writer(d / "inferred_groups.npz", lambda p, g=groups: np.savez(p, val_groups=g), ".npz")
            if specs[i].get("save_model") and state is not None:
                atomic_writer(d / "model.pt", lambda p, s=state: torch.save(s, p), ".pt")
            write_json(d / "results.json", res)
            for ckpt in checkpoints(d):
                ckpt.unlink(missing_ok=True)
            results[i] = res
    if error is not None:
        raise error
    return [r for r in results if r is not None]


__all__ = ["train_many", "execute_many", "group_key", "supported", "SHAPE_KEYS", "SUPPORTED_METHODS"]
