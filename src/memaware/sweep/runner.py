"""One training run described by a JSON-able spec: what ``memaware train`` and every ``memaware sweep`` job run.

A spec names the data (``data``: an ``.npz`` of features, or ``dataset`` + ``data_dir`` [+ ``backbone``,
``weights``] for end-to-end fine-tuning), the ``method``, its ``hparams``, the ``seed`` and the ``selection``
criterion. ``execute(spec, run_dir)`` trains it with a checkpoint in ``run_dir`` (a killed run resumes from it when
called again) and writes ``run_dir/results.json`` atomically at the end; that file existing means "finished".

results.json keys: ``spec``; ``method``; ``uses_train_groups`` / ``uses_val_groups`` (group labels the method
trains with / the primary criterion selects with); ``selection`` (criterion actually used); ``selected_epoch``;
``val`` and ``test`` (``metrics.group_report`` of the chosen checkpoint); ``criteria``: {criterion: {"epoch",
"val_score", "val", "test"}} for every criterion computable (val_wga, val_gi_wga, val_worst_class, val_avg);
``hparams`` (after defaults and method description); ``data`` (size, dims, notes); ``epochs_run``;
``resumed_from`` (epoch, or null); ``seconds``. Beside it, ``evaluations.npz`` (``memaware.evallog``) holds every
evaluation of the run, from which ``memaware.selection`` computes any criterion after the fact, and for XRM and MAT
``heldout_logits.npz`` (``heldout_logits`` (n_train, K): the logits of the twin that never trained on each
training example, in the order of ``train_rows``, the data's row indices of the training split; what
``memaware.MATLoss`` takes).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import atomic_writer, write_json
from ..data.groups import TRAIN, VAL, GroupData, load_npz
from ..engine import FitResult, TrainConfig
from ..errors import ConfigError, DataError
from ..evallog import FILENAME as EVALUATIONS
from ..fingerprint import data_fingerprint, settings_fingerprint
from ..methods import method_class
from ..runfolder import RunFolder, checkpoint_files, read_results
from ..selection import VAL_CRITERIA

CHECKPOINT, RESULTS = "checkpoint.pt", "results.json"
HELDOUT = "heldout_logits.npz"  # keys heldout_logits (n_train, K) float32, train_rows (n_train,): rows of the data


def train_hparam_defaults() -> dict[str, Any]:
    """The hyper-parameters every method takes, with the library's one set of defaults (``TrainConfig``'s, and a
    linear head without bias, as ``build_model``); a method's own follow from its declaration."""
    cfg = TrainConfig()
    keys = ("epochs", "max_steps", "lr", "optimizer", "momentum", "weight_decay", "batch_size", "class_balanced",
            "eval_every", "eval_every_steps", "init", "schedule", "warmup_fraction", "decay_rule", "clip_grad_norm",
            "head_dropout")  # fmt: skip
    return {**{k: getattr(cfg, k) for k in keys}, "hidden": [], "bias": False}


SPEC_KEYS = {
    "method", "data", "data_fingerprint", "dataset", "data_dir", "backbone", "weights", "image_size", "seed", "comb",
    "hparams", "selection", "device", "inferred_groups", "save_model", "checkpoint_every", "family", "max_length",
    "image_root", "resize", "normalize", "precision", "channels_last", "compile", "prefetch", "decode_cache",
    "augment",
}  # fmt: skip


def checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoint files: its own and those of its phases (``checkpoint.<phase>.pt``), never a user's."""
    return checkpoint_files(run_dir)


def method_hparam_defaults(method: str) -> dict[str, Any]:
    """``method``'s declared hyper-parameters with their defaults (registered name or ``module:Class``)."""
    return {k: spec.default for k, spec in method_class(method).hparams.items()}


def resolve_hparams(method: str, hparams: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults for ``method`` overridden by ``hparams``; unknown names are a ``ConfigError``."""
    allowed = {**train_hparam_defaults(), **method_hparam_defaults(method)}
    given = dict(hparams or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"hyper-parameter(s) {', '.join(unknown)} do not apply to method '{method}'")
    return {**allowed, **given}


def load_spec_data(spec: dict[str, Any]) -> tuple[GroupData, Any]:
    """The spec's data as ``GroupData`` and, for a real dataset opened from disk, the dataset (else None)."""
    if (spec.get("data") is None) == (spec.get("dataset") is None):
        raise ConfigError("give exactly one of --data FILE.npz and --dataset NAME (with --data-dir)")
    if spec.get("data") is not None:
        from ..data.datasets import is_table_path

        if is_table_path(spec["data"]):
            return open_table(spec)
        return load_npz(spec["data"]), None
    if not spec.get("data_dir"):
        raise ConfigError(f"--dataset {spec['dataset']} needs --data-dir (the folder holding its files)")
    from ..data.datasets import open_dataset

    dataset = open_dataset(spec["dataset"], spec["data_dir"], image_size=int(spec.get("image_size") or 224))
    return dataset.data, dataset


def default_backbone(modality: str) -> str:
    """The backbone a run on raw rows gets when the spec names none: the tiny random-init one of the modality."""
    return "tiny-cnn" if modality == "image" else "tiny-text"


def open_table(spec: dict[str, Any]) -> tuple[GroupData, Any]:
    """A user's table (``--data PATH.csv`` or an ImageFolder tree) as ``GroupData`` and its dataset. Images are
    normalised for ImageNet only for memaware's pretrained backbones unless ``normalize`` says otherwise."""
    from ..data.datasets import load_table
    from ..models.catalog import PRETRAINED_IMAGE

    normalize = spec.get("normalize") or ("imagenet" if spec.get("backbone") in PRETRAINED_IMAGE else "none")
    dataset = load_table(
        spec["data"], image_root=spec.get("image_root"), image_size=spec.get("image_size"),
        resize=spec.get("resize") or "stretch", normalize=normalize,
    )  # fmt: skip
    if dataset.modality == "text" and normalize != "none" and spec.get("normalize"):
        raise ConfigError("--normalize applies to image tables; this one holds text")
    return dataset.data, dataset


def train_config(
    spec: dict[str, Any], hp: dict[str, Any], end_to_end: bool = False, progress: bool = False
) -> TrainConfig:
    """The ``TrainConfig`` of a spec with resolved hyper-parameters ``hp`` (also used by ``memaware.engine.many``)."""
    device = spec.get("device") or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: CUDA is not available on this machine")
    return TrainConfig(
        epochs=int(hp["epochs"]),
        max_steps=int(hp["max_steps"]),
        lr=float(hp["lr"]),
        optimizer=hp["optimizer"],
        momentum=float(hp["momentum"]),
        weight_decay=float(hp["weight_decay"]),
        batch_size=int(hp["batch_size"]),
        class_balanced=bool(hp["class_balanced"]),
        seed=int(spec.get("seed", 0)),
        selection=spec.get("selection") or "auto",
        eval_every=int(hp["eval_every"]),
        eval_every_steps=int(hp["eval_every_steps"]),
        init=str(hp["init"]),
        schedule=str(hp["schedule"]),
        warmup_fraction=float(hp["warmup_fraction"]),
        decay_rule=str(hp["decay_rule"]),
        clip_grad_norm=float(hp["clip_grad_norm"]),
        head_dropout=float(hp["head_dropout"]),
        # end to end, an evaluation batch runs the backbone: keep it to what a training batch costs
        eval_batch_size=max(64, 2 * int(hp["batch_size"])) if end_to_end else 8192,
        device=device,
        precision=spec.get("precision") or "fp32",
        channels_last=spec.get("channels_last") or "auto",
        compile=bool(spec.get("compile", False)),
        prefetch=int(spec.get("prefetch", 2)),
        augment=spec.get("augment") or "none",
        progress=progress,
        progress_label=spec.get("method", ""),
    )


def model_factory_for(spec: dict[str, Any], dataset: Any, data: GroupData, bias: bool):
    """For end-to-end runs: a fresh backbone + heads for a given number of heads, from the spec's seed (the
    backbone is built and probed now: a bad one is refused before any training)."""
    if dataset is None:
        return None
    from ..models.backbone_source import end_to_end_factory
    from ..models.catalog import DEFAULT_MAX_LENGTH

    return end_to_end_factory(
        dataset, spec.get("backbone") or default_backbone(dataset.modality), weights=spec.get("weights"),
        seed=int(spec.get("seed", 0)), max_length=int(spec.get("max_length") or DEFAULT_MAX_LENGTH),
        bias=bias, device=spec.get("device") or "cpu",
    )  # fmt: skip


def inferred_groups(path: str | None, data: GroupData) -> torch.Tensor | None:
    """(n_val,) group ids read from an ``inferred_groups.npz`` (key ``val_groups``), checked like any data file:
    a regular .npz file, a whole member, integers >= 0, one per validation example."""
    if path is None:
        return None
    from ..data.files import member_problem, not_a_file_reason, not_npz_reason

    problem = not_a_file_reason(path) or not_npz_reason(path) or member_problem(path, "val_groups")
    if problem:
        raise DataError(f"--inferred-groups {path}: {problem}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "val_groups" not in f.files:
                raise ConfigError(f"{path}: no field 'val_groups' (expected an inferred_groups.npz of an XRM run)")
            raw = f["val_groups"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"--inferred-groups {path}: not a readable .npz file ({type(e).__name__})") from None
    if raw.ndim != 1 or not (np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_):
        raise DataError(f"--inferred-groups {path}: field 'val_groups' must be 1-D integers, found "
                        f"{raw.dtype} of shape {raw.shape}")  # fmt: skip
    if (raw < 0).any():
        i = int(np.argmax(raw < 0))
        raise DataError(f"--inferred-groups {path}: field 'val_groups' must be >= 0, found {raw[i]} at index {i}")
    groups = torch.from_numpy(raw.astype(np.int64))
    if len(groups) != int((data.split == VAL).sum()):
        raise ConfigError(
            f"{path}: {len(groups)} inferred groups, the validation split has {(data.split == VAL).sum()}"
        )
    return groups


def run_settings(spec: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape a run's model: method, resolved hyper-parameters, seed, selection."""
    return {"method": spec["method"], "hparams": hparams, "seed": int(spec.get("seed", 0)),
            "selection": spec.get("selection") or "auto"}  # fmt: skip


def execute(spec: dict[str, Any], run_dir: str | Path, progress: bool = False) -> dict[str, Any]:
    """Trains the run ``spec`` in ``run_dir`` (resuming from its checkpoint) and returns the results dict.

    A readable ``run_dir/results.json`` means the run is finished: its contents are returned, nothing is trained.
    A damaged one (truncated, not a run's record) is removed with memaware's other files there and the run trained
    again. A checkpoint written on other data than the spec's is refused (``ConfigError``).
    """
    from .prepared import check_resumable, prepare_run, train_prepared  # it builds on this module

    run_dir = Path(run_dir)
    done = read_results(run_dir / RESULTS)
    if done is not None:
        return done
    prep = prepare_run(spec, progress, run_dir)
    folder = RunFolder(run_dir)
    state = folder.state()
    if state.kind == "damaged":
        folder.clear()
    elif state.kind == "unfinished":
        check_resumable(folder, prep)
    folder.begin(prep.output_names(), prep.facts())
    return train_prepared(prep, run_dir)


def run_record(
    spec: dict[str, Any], result: FitResult, data: GroupData, hp: dict[str, Any], dataset: Any, seconds: float
) -> dict[str, Any]:
    """results.json's dict for the finished run of ``spec`` (module docstring): the chosen checkpoint's reports,
    what every criterion would choose, the resolved hyper-parameters ``hp`` and the method's description."""
    criteria = result.selection_reports
    chosen = criteria.get(result.selection)
    return {
        "spec": spec,
        "method": spec["method"],
        "uses_train_groups": bool(result.method.needs_train_groups),
        "uses_val_groups": result.selection == "val_wga",
        "selection": result.selection,
        "selected_epoch": result.selected_epoch,
        "val": chosen["val"] if chosen else result.evaluate(data, "val"),
        "test": chosen["test"] if chosen else result.evaluate(data, "test"),
        "criteria": criteria,
        # named, not dropped: e.g. val_wga without validation attributes, val_gi_wga without inferred groups
        "criteria_not_computable": [c for c in VAL_CRITERIA if c not in criteria] if criteria else [],
        "hparams": {**hp, **result.method.describe()},
        "data": describe_data(spec, data, dataset),
        "epochs_run": result.epochs_run,
        "resumed_from": result.resumed_from,
        "seconds": seconds,
        "evaluation_log": result.evaluations is not None,  # evaluations.npz beside it (tables need it then)
        "fingerprint": {
            "data": data_fingerprint(dataset if dataset is not None else data),
            "settings": settings_fingerprint(run_settings(spec, hp)),
        },
        **({"throughput": throughput(spec, result)} if dataset is not None else {}),
    }


def throughput(spec: dict[str, Any], result: FitResult) -> dict[str, Any]:
    """An end-to-end run's throughput per run of its method (its phases first): images, seconds, images/s, data
    wait, evaluations, each epoch's seconds. Runs on features leave it out: their records stay equal between the
    one-at-a-time and the batched modes, which time differently."""
    return {
        **{name: r.throughput for name, r in result.phases.items() if r.throughput},
        **({spec["method"]: result.throughput} if result.throughput else {}),
    }


def write_run_files(
    run_dir: Path, spec: dict[str, Any], record: dict[str, Any], result: FitResult, split: Any = None
) -> None:
    """A finished run's files: inferred_groups.npz, evaluations.npz, model.pt (``save_model``), then results.json
    (its existence means "finished") and the checkpoints removed."""
    if result.val_inferred_groups is not None:
        groups = result.val_inferred_groups.cpu().numpy().astype(np.int64)
        atomic_writer(run_dir / "inferred_groups.npz", lambda p: np.savez(p, val_groups=groups), ".npz")
    heldout = (result.outputs or {}).get("heldout_logits")
    if heldout is not None and split is not None:  # XRM / MAT: each training example's held-out logits (MATLoss)
        arrays = {"heldout_logits": heldout.detach().cpu().numpy().astype(np.float32),
                  "train_rows": np.flatnonzero(np.asarray(split) == TRAIN).astype(np.int64)}  # fmt: skip
        atomic_writer(run_dir / HELDOUT, lambda p: np.savez(p, **arrays), ".npz")
    if result.evaluations is not None:  # every evaluation: any criterion, even a later one, selects from it
        result.evaluations.save(run_dir / EVALUATIONS)
    if spec.get("save_model"):
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        atomic_writer(run_dir / "model.pt", lambda p: torch.save(state, p), ".pt")
    write_json(run_dir / RESULTS, record)
    for path in checkpoints(run_dir):  # finished: results.json is the record, checkpoints only cost disk
        path.unlink(missing_ok=True)


def describe_data(spec: dict[str, Any], data: GroupData, dataset: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": spec.get("data") or f"{spec.get('dataset')} in {spec.get('data_dir')}",
        "n": len(data),
        "dim": data.dim,
        "num_classes": data.num_classes,
        "num_attrs": data.num_attrs,
        "split_sizes": [int((data.split == s).sum()) for s in range(3)],
    }
    if dataset is not None:
        out["notes"] = list(dataset.notes)
        out["duplicated_splits"] = list(dataset.duplicated_splits)
        out["backbone"] = spec.get("backbone") or default_backbone(dataset.modality)
    if hasattr(dataset, "describe"):  # a user's table: class and attribute names, image size and normalisation
        out.update(dataset.describe())
    return out
