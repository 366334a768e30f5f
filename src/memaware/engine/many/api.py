"""``train_many`` / ``execute_many``: run specs (``memaware.sweep.runner``'s) trained as members of one batched program.

Specs that share a ``group_key`` (method, data, device, the shape hyper-parameters ``SHAPE_KEYS`` and the program
kind: heads and fast path) train together through ``members.train_members``; the results are the dicts (and files)
``runner.execute`` writes for the same specs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...data.groups import GroupData
from ...errors import ConfigError
from ...methods import Method, make_method
from ..result import FitResult
from .members import Member, fast_path, train_members, trainable

# hyper-parameters every member of one program shares (they fix the program's shape and schedule)
SHAPE_KEYS = (
    "batch_size", "epochs", "max_steps", "optimizer", "hidden", "bias", "class_balanced", "eval_every",
    "eval_every_steps",
)  # fmt: skip
DATA_KEYS = ("data", "dataset", "data_dir", "backbone", "weights", "image_size", "max_length", "image_root", "resize",
             "normalize")  # fmt: skip


def _hparams(spec: dict[str, Any]) -> dict[str, Any]:
    from ...sweep.runner import resolve_hparams  # lazy: the runner imports the engine; keep this module light to import

    return resolve_hparams(spec.get("method", ""), spec.get("hparams"))


def _method(spec: dict[str, Any], hp: dict[str, Any]) -> Method:
    from ...sweep.runner import method_hparam_defaults

    name = spec["method"]
    return make_method(name, **{k: hp[k] for k in method_hparam_defaults(name)})


def _model_kwargs(hp: dict[str, Any]) -> dict[str, Any]:
    return {"hidden": tuple(int(h) for h in hp["hidden"]), "bias": bool(hp["bias"])}


def group_key(spec: dict[str, Any]) -> tuple:
    """What specs must share to be trained by one ``train_many`` call: method, data, device, shape hyper-parameters
    (``SHAPE_KEYS``) and program kind (number of heads, fast path). Seeds, lr, weight decay, momentum and method
    hyper-parameters may differ."""
    try:
        hp = _hparams(spec)
        method = _method(spec, hp)
        kind = (method.num_heads, getattr(fast_path(method), "__qualname__", "autograd"))
    except (ConfigError, KeyError, TypeError):
        hp, kind = dict(spec.get("hparams") or {}), None
    shape = tuple(json.dumps(hp.get(k), sort_keys=True) for k in SHAPE_KEYS)
    data = tuple(json.dumps(spec.get(k)) for k in DATA_KEYS)
    return (spec.get("method"), data, spec.get("device") or "cpu", shape, kind)


def supported(spec: dict[str, Any]) -> bool:
    """Whether ``train_many`` can train ``spec``: a classification method the batched mode trains (a fast path, or
    the plain forward: ``members.trainable``), a head on a features file (``data``), valid hyper-parameters and an
    available device. Anything else goes through ``runner.execute``."""
    if not spec.get("method") or spec.get("dataset") is not None:
        return False
    try:
        hp = _hparams(spec)
        method = _method(spec, hp)
    except (ConfigError, KeyError, TypeError):
        return False
    if not isinstance(hp.get("hidden"), list | tuple) or not trainable(method, _model_kwargs(hp)):
        return False
    device = spec.get("device") or "cpu"
    return device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())


def _member(data: GroupData, spec: dict[str, Any], inferred_groups: dict[int, torch.Tensor] | None) -> Member:
    """The member ``runner.execute`` would train for ``spec`` (its checks included)."""
    from ...sweep.runner import SPEC_KEYS, train_config
    from ...sweep.runner import inferred_groups as read_inferred_groups

    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"run spec has unknown key(s) {', '.join(unknown)}")
    hp = _hparams(spec)
    cfg = train_config(spec, hp)
    if inferred_groups is not None and cfg.seed in inferred_groups:
        external = torch.as_tensor(inferred_groups[cfg.seed]).long()
    else:
        external = read_inferred_groups(spec.get("inferred_groups"), data)
    return Member(_method(spec, hp), cfg, _model_kwargs(hp), external_groups=external)


def _record(spec: dict[str, Any], result: FitResult, data: GroupData, seconds: float) -> dict[str, Any]:
    """results.json's dict for a trained spec, as ``runner.execute`` builds it (plus ``"vectorized": True``)."""
    from ...sweep.runner import run_record

    return {**run_record(spec, result, data, _hparams(spec), None, seconds), "vectorized": True}


def _train(
    data: GroupData, specs: list[dict[str, Any]], inferred_groups: dict[int, torch.Tensor] | None, progress: bool
) -> list[tuple[dict[str, Any], FitResult]]:
    t0 = time.perf_counter()
    for spec in specs:
        if not supported(spec):
            raise ConfigError(f"train_many cannot train spec {json.dumps(spec, sort_keys=True)[:200]}")
    if len({group_key(s) for s in specs}) != 1:
        raise ConfigError("train_many needs specs of one method, data and shape (see vectorized.group_key)")
    members = [_member(data, spec, inferred_groups) for spec in specs]
    results = train_members(data, members, with_outputs=False, progress=progress)
    seconds = (time.perf_counter() - t0) / len(specs)
    return [(_record(spec, res, data, seconds), res) for spec, res in zip(specs, results, strict=True)]


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
    (result, val_inferred_groups (n_val,) or None, the selected checkpoint's ``MultiHeadNet`` state dict with
    ``keep_models``, else None), what ``runner.execute`` writes to files.
    """
    if not specs:
        return []
    trained = _train(data, list(specs), inferred_groups, progress)
    if not with_inferred_groups:
        return [rec for rec, _ in trained]
    out = []
    for rec, res in trained:
        state = {k: v.detach().cpu() for k, v in res.model.state_dict().items()} if keep_models else None
        out.append((rec, res.val_inferred_groups, state))
    return out


# ---- files: the counterpart of runner.execute for many runs ---------------------------------------------------
def execute_many(
    specs: Sequence[dict[str, Any]], run_dirs: Sequence[str | Path], progress: bool = False
) -> list[dict[str, Any]]:
    """Trains every run ``specs[i]`` into ``run_dirs[i]`` like ``runner.execute`` (results.json, evaluations.npz,
    inferred_groups.npz, model.pt with ``save_model``), the supported ones batched by ``group_key`` through
    ``train_many``, the others one at a time. Runs whose results.json exists are returned as they are. Every batch
    is attempted; the first error is raised at the end."""
    from ...errors import DivergenceError
    from ...fingerprint import check_same_data, data_fingerprint
    from ...runfolder import read_results
    from ...sweep.prepared import with_paths_from
    from ...sweep.runner import execute, load_spec_data, write_run_files
    from ..divergence import HINT, first_bad_weight

    if len(specs) != len(run_dirs):
        raise ConfigError(f"{len(specs)} specs but {len(run_dirs)} run directories")
    dirs = [Path(d) for d in run_dirs]
    specs = [with_paths_from(s, d) for s, d in zip(specs, dirs, strict=True)]  # a sweep's paths are relative
    results: list[dict[str, Any] | None] = [None] * len(specs)
    batches: dict[tuple, list[int]] = {}
    error: BaseException | None = None
    for i, (spec, d) in enumerate(zip(specs, dirs, strict=True)):
        done = read_results(d / "results.json")
        if done is not None:  # a damaged record is trained again
            results[i] = done
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
            if spec0.get("data_fingerprint") is not None:
                where = "the sweep that planned this run"
                check_same_data(spec0["data_fingerprint"], data_fingerprint(cache[source]), str(spec0["data"]), where)
            trained = _train(cache[source], [specs[i] for i in idx], None, progress)
        except Exception as e:  # the other batches still train
            error = error or e
            continue
        for i, (record, result) in zip(idx, trained, strict=True):
            weight = first_bad_weight(result.model)
            if weight is not None:  # a member diverged: no results.json of a NaN model (checked once, at the end)
                error = error or DivergenceError(
                    f"{specs[i]['method']} (batched member {dirs[i].name}) diverged: weight {weight[0]} holds "
                    f"{weight[1]}; {HINT}"
                )
                continue
            write_run_files(dirs[i], specs[i], record, result, cache[source].split.numpy())
            results[i] = record
    if error is not None:
        raise error
    return [r for r in results if r is not None]
