"""A run prepared before anything is written: ``prepare_run`` checks and loads every input a spec names (method,
hyper-parameters, data and its fingerprint, device, inferred groups, backbone, the selection criterion), so that
``memaware train`` and a sweep's runs refuse bad input in one line before a run folder is touched; then
``train_prepared`` trains it (``runner.execute`` for a sweep, ``experiments.train`` for the command line)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.groups import GroupData
from ..engine import TrainConfig, fit
from ..engine.evaluation import check_criterion, start_log
from ..engine.fitting import check_run
from ..errors import ConfigError
from ..fingerprint import check_same_data, data_fingerprint, settings_fingerprint
from ..methods import Method, make_method
from ..methods.base import checkpoint_for
from ..runfolder import OUTPUTS, RunFolder
from .runner import (
    CHECKPOINT,
    HELDOUT,
    SPEC_KEYS,
    inferred_groups,
    load_spec_data,
    method_hparam_defaults,
    model_factory_for,
    resolve_hparams,
    run_record,
    run_settings,
    train_config,
    write_run_files,
)  # fmt: skip


@dataclass
class PreparedRun:
    """A run with every input checked and loaded (``prepare_run``), before anything is written or removed."""

    spec: dict[str, Any]
    hp: dict[str, Any]
    data: GroupData
    dataset: Any
    config: TrainConfig
    method: Method
    model_factory: Any
    inferred: torch.Tensor | None
    fingerprint: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.spec.get("data") or f"{self.spec.get('dataset')} in {self.spec.get('data_dir')}")

    def output_names(self) -> list[str]:
        """Every file the run writes in its folder: its outputs and the checkpoints of the run and its phases."""
        names, todo = [CHECKPOINT], [(Path(CHECKPOINT), self.method)]
        while todo:
            path, method = todo.pop()
            for phase in method.phases():
                sub = checkpoint_for(path, phase.name)
                names.append(sub.name)
                todo.append((sub, phase.method))
        return [*OUTPUTS, HELDOUT, *names]

    def facts(self) -> dict[str, Any]:
        """What the folder's record keeps: the data's source and fingerprint, the settings' fingerprint."""
        settings = json.loads(json.dumps(self.settings(), default=repr))  # as the record will read it back
        return {"method": self.spec["method"], "data_source": self.source, "data": self.fingerprint,
                "settings": settings_fingerprint(self.settings()), "settings_values": settings}  # fmt: skip

    def settings(self) -> dict[str, Any]:
        return run_settings(self.spec, self.hp)


PATH_KEYS = ("data", "data_dir", "image_root", "weights", "inferred_groups")


def with_paths_from(spec: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """``spec`` with each relative path that does not exist from here taken from ``run_dir`` (a sweep writes paths
    relative to the run folder, so that a moved sweep resumes)."""
    if run_dir is None:
        return spec
    out = dict(spec)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
            there = run_dir / value
            if there.exists():
                out[key] = str(there.resolve())
    return out


def prepare_run(spec: dict[str, Any], progress: bool = False, run_dir: Path | None = None) -> PreparedRun:
    """Checks and loads everything ``spec`` names (keys, method, hyper-parameters, data, device, inferred groups,
    backbone; relative paths also from ``run_dir``) and fingerprints the data, which must match the spec's
    ``data_fingerprint`` when it has one (a sweep's); raises a ``MemawareError`` (one line) before anything is
    written. The prepared run keeps ``spec`` as given, for its record."""
    record, spec = spec, with_paths_from(spec, run_dir)
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"run spec has unknown key(s) {', '.join(unknown)}")
    method = spec.get("method")
    if not method:
        raise ConfigError("run spec needs a 'method'")
    hp = resolve_hparams(method, spec.get("hparams"))
    data, dataset = load_spec_data(spec)
    cfg = train_config(spec, hp, end_to_end=dataset is not None, progress=progress)
    if callable(getattr(dataset, "configure_decoding", None)):  # images decoded once, shared by the phases
        dataset.configure_decoding(spec.get("decode_cache") or "auto", progress=progress)
    method_obj = make_method(method, **{k: hp[k] for k in method_hparam_defaults(method)})
    groups = inferred_groups(spec.get("inferred_groups"), data)
    factory = model_factory_for(spec, dataset, data, bool(hp["bias"]))
    check_run(method_obj, data, cfg, factory, spec.get("checkpoint_every"))  # what fit refuses, refused now
    if method_obj.task == "classification":
        check_criterion(cfg.selection, data, start_log(data), method_obj, groups is not None)
    fp = data_fingerprint(dataset if dataset is not None else data)
    planned = spec.get("data_fingerprint")
    if planned is not None:
        source = spec.get("data") or f"{spec.get('dataset')} in {spec.get('data_dir')}"
        check_same_data(planned, fp, str(source), "the sweep that planned this run")
    return PreparedRun(record, hp, data, dataset, cfg, method_obj, factory, groups, fp)


def train_prepared(prep: PreparedRun, run_dir: Path) -> dict[str, Any]:
    """Trains a prepared run in ``run_dir`` (resuming from its checkpoint) and writes its files."""
    t0 = time.perf_counter()
    result = fit(
        prep.data,
        prep.method,
        prep.config,
        model_kwargs={"hidden": tuple(prep.hp["hidden"]), "bias": bool(prep.hp["bias"])},
        model_factory=prep.model_factory,
        val_inferred_groups=prep.inferred,
        checkpoint=run_dir / CHECKPOINT,
        checkpoint_every=prep.spec.get("checkpoint_every"),  # default: every 30 s
    )
    res = run_record(prep.spec, result, prep.data, prep.hp, prep.dataset, time.perf_counter() - t0)
    write_run_files(run_dir, prep.spec, res, result, prep.data.split.numpy())
    return res


def check_resumable(folder: RunFolder, prep: PreparedRun) -> None:
    """Refuses to continue a run in ``folder`` whose record names other data or other settings than ``prep``'s,
    in one line naming what changed (the checkpoint's own signature is checked again when it is loaded)."""
    rec = folder.record()
    if rec and "data" in rec:
        check_same_data(rec["data"], prep.fingerprint, prep.source, f"the run in {folder.path}", rec.get("data_source"))
    old, new = (rec or {}).get("settings_values"), prep.facts()["settings_values"]
    if isinstance(old, dict) and old != new:
        raise ConfigError(
            f"the run in {folder.path} was started with other settings ({first_difference(old, new)}); resume it "
            "with the same flags, or start over with --overwrite"
        )


def first_difference(old: dict, new: dict, prefix: str = "") -> str:
    """'key: then -> now' of the first key where two nested dicts differ."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                return first_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            return f"{prefix}{key}: {a!r} then, {b!r} now"
    return "none"
