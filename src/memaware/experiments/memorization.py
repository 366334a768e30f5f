"""Memorization audit (paper Appendix B.2, Fig. 2; ``memaware memorization``): per-example memorization scores of
the training split for each method, summarised per group; writes scores.npz, memorization.json and fig2.png."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_writer, write_json
from ..data import TRAIN, GroupData
from ..engine import TrainConfig
from ..errors import ConfigError
from ..memorization.audit import gap_change, group_ids, summarize, train_accuracy, warnings_for
from ..memorization.estimate import estimate
from ..memorization.scores import LINEAR_AUDIT_METHODS, LINEAR_DEFAULT_WD, MemorizationScores
from ..plots.memorization import plot_fig2

SCHEMA = "memaware.memorization/1"
LINEAR_ESTIMATORS = ("newton", "loo", "influence")  # L2-logistic heads: need weight decay > 0


TRAININGS = ("end-to-end", "frozen")
TRAINING_LABELS = {"end-to-end": "end-to-end", "frozen": "frozen features"}


@dataclass
class AuditInput:
    """What the audit trains on: ``data`` (features, or a ``RealDataset``'s row-index metadata end to end), the
    caller's network as ``model_factory`` (end to end; None: memaware's heads on ``data.x``), ``source`` (the data,
    for records) and ``model`` (the ``"model"`` record: backbone, training, feature_dim, ...)."""

    data: GroupData
    source: str
    model: dict[str, Any]
    model_factory: Callable[..., Any] | None = None
    about: dict[str, Any] = field(default_factory=dict)  # the dataset's label / attribute names and notes


def default_training(backbone: Any) -> str:
    """'end-to-end' for the caller's own network (a ``package.module:name`` reference, a module or a function),
    'frozen' for a memaware catalogue backbone (a feature extractor: the cheap linear-probe audit)."""
    from ..references import is_reference

    return "frozen" if isinstance(backbone, str) and not is_reference(backbone) else "end-to-end"


def own_model_input(
    dataset: Any,
    backbone: Any,
    *,
    training: str | None = None,
    weights: str | Path | None = None,
    seed: int = 0,
    bias: bool = False,
    device: str = "cpu",
    out: str | Path | None = None,
    source: str | None = None,
    progress: bool = False,
) -> AuditInput:
    """The audit's input for ``backbone`` on ``dataset`` (a ``RealDataset``, e.g. ``load_table``'s, or ``GroupData``
    features): ``training`` 'end-to-end' (each audit model is the backbone + memaware's linear heads, trained end
    to end by ``fit``, its weights drawn from the model's seed: ``memorization.own_model_factory``) or 'frozen'
    (every row embedded once in eval mode, written to ``out/features.npz`` when ``out`` is given, and the audit's
    heads trained on those features); None: ``default_training``. A bad backbone is a one-line ``ConfigError``
    (one probe forward) before any training."""
    from ..memorization.own_model import own_model_factory
    from .features import frozen_features

    training = training or default_training(backbone)
    if training not in TRAININGS:
        raise ConfigError(f"training must be one of {', '.join(TRAININGS)}, got '{training}'")
    meta = getattr(dataset, "data", dataset)
    about = {k: list(v) for k in ("label_names", "attr_names", "notes") if (v := getattr(dataset, k, None))}
    source = source or str(getattr(dataset, "name", None) or "features in memory")
    if training == "frozen":
        data, label, dim = frozen_features(dataset, backbone, weights=weights, seed=seed, device=device,
                                           progress=progress)  # fmt: skip
        model: dict[str, Any] = {"backbone": label, "training": TRAINING_LABELS[training], "feature_dim": dim}
        if out is not None:
            path = data.save_npz(Path(out) / "features.npz")
            model["features"] = str(path)
            source = f"{source}, {label} features -> {path}"
        return AuditInput(data, source, model, about=about)
    factory = own_model_factory(dataset, backbone, seed=seed, weights=weights, bias=bias, device=device)
    model = {"backbone": factory.backbone_label, "training": TRAINING_LABELS[training],
             "feature_dim": factory.feature_dim, "heads": "linear" + (" with bias" if bias else ""),
             "initialisation": "backbone and heads drawn from each model's seed"}  # fmt: skip
    return AuditInput(meta, source, model, factory, about)


def dataset_features(
    dataset: str,
    data_dir: str | Path,
    out: str | Path,
    backbone: str | None = None,
    weights: str | None = None,
    seed: int = 0,
    image_size: int = 224,
    device: str = "cpu",
    progress: bool = False,
):
    """A real dataset (``memaware train --dataset``'s layouts) as the audit's input: every row embedded once by
    ``backbone`` (default: the tiny one of the dataset's modality; ``resnet50`` / ``bert`` with local weights), the
    features written to ``out/features.npz`` (reusable with ``--data``), and the heads audited on them. Returns
    (GroupData, a description of the source)."""
    from ..data.datasets import MODALITIES
    from ..errors import ConfigError
    from ..models.backbones import BACKBONES
    from .features import extract_features

    if dataset not in MODALITIES:
        raise ConfigError(f"--dataset {dataset}: unknown dataset, choose from {', '.join(MODALITIES)}")
    modality = MODALITIES[dataset]
    backbone = backbone or ("tiny-cnn" if modality == "image" else "tiny-text")
    if backbone not in BACKBONES:
        raise ConfigError(f"--backbone {backbone}: unknown backbone, choose from {', '.join(BACKBONES)}")
    if BACKBONES[backbone] != modality:
        raise ConfigError(
            f"backbone '{backbone}' takes {BACKBONES[backbone]} input but dataset '{dataset}' is {modality}; choose "
            f"from {', '.join(b for b, m in BACKBONES.items() if m == modality)}"
        )
    feats = extract_features(
        dataset, data_dir, backbone, Path(out) / "features.npz", weights=weights, seed=seed, image_size=image_size,
        device=device, progress=progress,
    )  # fmt: skip
    return feats.data, f"{dataset} in {data_dir}, {feats.backbone} features -> {feats.path}"


def audit_config(
    estimator: str,
    epochs: int = 1000,
    lr: float = 1e-2,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float | None = None,
    batch_size: int = 0,
    seed: int = 0,
    device: str = "cpu",
) -> TrainConfig:
    """The training configuration of the audit's models; ``weight_decay`` None: 0, or ``LINEAR_DEFAULT_WD`` for the
    estimators on L2-logistic heads."""
    if weight_decay is None:
        weight_decay = LINEAR_DEFAULT_WD if estimator in LINEAR_ESTIMATORS else 0.0
    return TrainConfig(epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                       batch_size=batch_size, seed=seed, selection="last", device=device)


def run_audit(data, methods: tuple[str, ...], estimator: str, cfg: TrainConfig, out: str | Path,
              source: str, warn_gap: float = 0.1, progress: bool = False, model: dict[str, Any] | None = None,
              about: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """Scores every method, writes scores.npz, memorization.json and fig2.png into ``out``; returns the JSON.
    ``model``: the JSON's ``"model"`` record (``AuditInput.model``; default: memaware's heads on the features);
    ``about``: more of the ``"data"`` record (``AuditInput.about``: label / attribute names, notes);
    ``kwargs`` go to ``memorization.estimate`` (``model_factory`` for the caller's network end to end)."""
    t0 = time.perf_counter()
    out = Path(out)
    idx = data.indices(TRAIN)
    y, a = data.y[idx].numpy(), data.a[idx].numpy()
    results: dict[str, MemorizationScores] = {}
    unfit = [m for m in methods if estimator in LINEAR_ESTIMATORS and m not in LINEAR_AUDIT_METHODS]
    if unfit:  # before any model is trained
        raise ConfigError(
            f"{estimator} models an L2-logistic head ({', '.join(LINEAR_AUDIT_METHODS)}); for {', '.join(unfit)} "
            "use subsample or trak"
        )
    for m in methods:
        results[m] = estimate(data, m, estimator, cfg, progress=progress, **kwargs)
    per_method, warnings = {}, []
    for m, r in results.items():
        summ = summarize(r.scores, y, a, data.num_attrs)
        entry = {**r.describe(), **summ}
        if r.p_true is not None:
            entry["train_accuracy"] = train_accuracy(r.p_true, y, a, data.num_attrs)
        if r.baseline is not None:
            base = summarize(r.baseline, y, a, data.num_attrs)
            entry["baseline_1_minus_p"] = {"overall_mean": base["overall"]["mean"],
                                           "group_means": {g: s["mean"] for g, s in base["groups"].items()}}
        per_method[m] = entry
        warnings += warnings_for(m, summ, warn_gap)
    first = next(iter(results.values()))
    end_to_end = kwargs.get("model_factory") is not None  # x is the row index: the network's input is the dataset's
    result = {
        "schema": SCHEMA, "estimator": estimator, "target": first.target, "units": first.units,
        "data": {"source": source, "n_train": len(idx), "dim": None if end_to_end else data.dim,
                 "num_classes": data.num_classes, "num_attrs": data.num_attrs, **(about or {})},
        "model": model or _heads_record(kwargs.get("model_kwargs")),
        "methods": per_method,
        "audit": {"warnings": warnings, "warn_gap": warn_gap, "gap_change": gap_change(per_method),
                  "no_attributes": bool((a < 0).all()),
                  "most_memorized": {m: max(e["groups"], key=lambda g, e=e: e["groups"][g].get("mean", -np.inf))
                                     for m, e in per_method.items()}},
    }
    _write_scores(out / "scores.npz", results, idx.numpy(), y, a, data.num_attrs)
    plot_fig2({m: r.scores for m, r in results.items()}, y, a, data.num_attrs, out / "fig2.png",
              xlabel=f"{estimator} score", label_names=(about or {}).get("label_names"),
              attr_names=(about or {}).get("attr_names"))  # fmt: skip
    result["seconds"] = time.perf_counter() - t0
    write_json(out / "memorization.json", result)
    return result


def _heads_record(model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    mk = model_kwargs or {}
    hidden = list(mk.get("hidden", ()))
    return {"backbone": None, "training": "heads on the given features",
            "heads": f"MLP {hidden}" if hidden else "linear", "bias": bool(mk.get("bias", False))}  # fmt: skip


def _write_scores(path: Path, results: dict[str, MemorizationScores], index: np.ndarray, y: np.ndarray,
                  a: np.ndarray, num_attrs: int) -> None:
    arrays: dict[str, np.ndarray] = {"index": index.astype(np.int64), "y": y, "a": a,
                                     "group": group_ids(y, a, num_attrs)[0].astype(np.int64),
                                     "estimator": np.array(next(iter(results.values())).estimator)}
    for m, r in results.items():
        arrays[f"score_{m}"] = r.scores.astype(np.float64)
        if r.se is not None:
            arrays[f"se_{m}"] = r.se.astype(np.float64)
        if r.baseline is not None:
            arrays[f"baseline_{m}"] = r.baseline.astype(np.float64)
        for k, v in r.extra.items():
            arrays[f"{k}_{m}"] = np.asarray(v, dtype=np.float64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_writer(path, write, ".npz")


__all__ = ["SCHEMA", "LINEAR_DEFAULT_WD", "AuditInput", "audit_config", "dataset_features", "default_training",
           "own_model_input", "run_audit"]
