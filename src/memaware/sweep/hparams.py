"""The hyper-parameter registry of the Table-1 sweeps: random search, reproducible from the combination index.

``sample_hparams(method, family, comb)`` draws combination ``comb`` from a numpy Generator of its own, seeded from
a stable hash (SHA-256, not Python's salted ``hash``) of ``(method, family, comb)``: the same index gives the same
hyper-parameters on every machine, in every process, whatever else was drawn before, and for every seed (a
combination is one configuration; the seeds of a sweep repeat it). Combination 0 is not drawn: it is the
default of each method and family.

Ranges (``log10 U(a, b)``: 10 ** uniform(a, b); ``2 ** U(a, b)``: int(2 ** uniform(a, b)), as in the authors'
registry, github facebookresearch/Pitfalls-of-Memorization, ``registry.py``):

=============  ============================================  ==============================  ==========================
family         features (linear head on embeddings, .npz)    image (end-to-end ResNet-50)    text (end-to-end BERT)
=============  ============================================  ==============================  ==========================
optimizer      adam                                          sgd, momentum 0.9               adamw
lr             log10 U(-4, -2); comb 0: 1e-3                 log10 U(-5, -3); comb 0: 1e-3   log10 U(-6, -4); 0: 2e-5
weight_decay   log10 U(-6, -3); comb 0: 1e-4                 log10 U(-6, -3); comb 0: 1e-4   log10 U(-6, -3); 0: 1e-4
batch_size     128                                           2 ** U(5, 7); comb 0: 64        2 ** U(4, 6); 0: 32
epochs         30                                            DATASET_EPOCHS, else 10         DATASET_EPOCHS, else 5
init           zeros (the authors' heads)                    zeros                           zeros
clip_grad_norm 0 (none)                                      0                               1.0
head_dropout   0                                             0                               0.1
hidden         [] (linear head)                              []                              []
bias           True                                          True                            True
schedule       constant                                      constant                        linear, 10 % warm-up

End to end, weight decay skips biases and normalisation layers (``torch_optim``; ``decay_rule=authors`` and
``schedule=xrm`` reproduce the authors' BERT set-up, see docs/optimisation.md).

Heads on features keep one optimiser and batch size so that every combination of a method shares one batched
program (``memaware sweep --vectorized``); 30 epochs of batch 128 is about 1,100 steps on Waterbirds-sized data,
the authors' 1,001-step budget. (``memaware train``'s own defaults, full-batch SGD for 1000 epochs, are the paper's
Setup 2.1 protocol, not a features protocol.)
=============  ============================================  ==============================  ==========================

Method-specific hyper-parameters and their ranges are declared by each method in its own module
(``Method.hparams``: see ``memaware.methods.mat``, ``groupdro``, ``jtt``); they are drawn after the common ones, in
the order the method declares them, and combination 0 takes each one's default. A user's method
(``package.module:Class``) is swept over its own declarations the same way.

- ``class_balanced`` (mini-batches drawn with every class equally likely): True for CivilComments only, as the
  authors do (XRM's class-balanced *loss* is part of the method, not this switch).

Epochs are fixed per family/dataset, not searched: model selection picks the epoch on validation. Fixed values of a
sweep (``memaware sweep --set epochs=50``) replace drawn ones for every combination (``fixed=``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..methods import METHODS, classifiers, method_class
from ..methods.space import FAMILIES

# Datasets whose family and epoch budget are known (lower-case names, as ``--dataset`` takes them).
DATASET_FAMILY = {
    "waterbirds": "image",
    "celeba": "image",
    "multinli": "text",
    "civilcomments": "text",
    "civilcomments-fine": "text",
}
# About the authors' step budgets (1001 / 10001 / 60001 / 60001 steps at their mean batch size) in epochs.
DATASET_EPOCHS = {"waterbirds": 15, "celeba": 5, "multinli": 10, "civilcomments": 7, "civilcomments-fine": 7}

# Comb 0 of each family (method-independent part).
# Every family starts its linear heads at zero, as the authors' code does (docs/fidelity.md).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "features": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 128, "epochs": 30,
                 "init": "zeros"},
    "image": {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64, "epochs": 10, "init": "zeros"},
    # BERT's recipe: AdamW, decay on weights only, linear warm-up (10 %) then linear decay (DESIGN.md), gradients
    # clipped to norm 1 (Hugging Face's default), dropout 0.1 before the heads (BertForSequenceClassification's)
    "text": {"optimizer": "adamw", "lr": 2e-5, "weight_decay": 1e-4, "batch_size": 32, "epochs": 5,
             "schedule": "linear", "warmup_fraction": 0.1, "clip_grad_norm": 1.0, "head_dropout": 0.1,
             "init": "zeros"},
}
# log10 lr range per (family, optimizer); log2 batch-size range per family (None: full batch, fixed).
_LR_RANGE = {
    ("features", "adam"): (-4, -2),
    ("image", "sgd"): (-5, -3),
    ("text", "adamw"): (-6, -4),
}
_BS_RANGE: dict[str, tuple[int, int] | None] = {"features": None, "image": (5, 7), "text": (4, 6)}
_WD_RANGE = (-6, -3)


def recipe_defaults(family: str, dataset: str | None = None) -> dict[str, Any]:
    """The training settings of combination 0 of ``family`` (the recipe ``memaware train --dataset`` starts from):
    optimizer, lr, weight decay, batch size, epochs (``DATASET_EPOCHS`` for a known dataset), momentum, schedule,
    warm-up, head init, gradient clipping, head dropout and class-balanced batches. Keys a family leaves to the
    library are absent (``TrainConfig``'s default applies)."""
    check_family(family)
    hp: dict[str, Any] = dict(_DEFAULTS[family])
    name = dataset.lower() if dataset else None
    if family != "features" and name in DATASET_EPOCHS:
        hp["epochs"] = DATASET_EPOCHS[name]
    hp["momentum"] = 0.9 if family == "image" else 0.0
    hp["class_balanced"] = bool(name and name.startswith("civilcomments"))
    return hp


def check_method(method: str) -> str:
    """Returns ``method`` if it is a registered classifier or a ``module:Class`` reference to a ``Method``
    subclass, else raises ``ConfigError`` listing the known ones."""
    cls = method_class(method)
    if cls.task != "classification":
        raise ConfigError(f"method '{method}' is not a classifier, choose from {', '.join(classifiers())}")
    return method


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ConfigError(f"unknown hyper-parameter family '{family}', choose from {', '.join(FAMILIES)}")
    return family


def family_for(dataset: str | None) -> str:
    """The family of a named dataset (``image`` / ``text``); ``features`` for an .npz file (``dataset=None``)."""
    if dataset is None:
        return "features"
    name = dataset.lower()
    if name not in DATASET_FAMILY:
        raise ConfigError(
            f"no hyper-parameter family known for dataset '{dataset}' (known: {', '.join(DATASET_FAMILY)}); "
            "pass --family features|image|text"
        )
    return DATASET_FAMILY[name]


def uses_train_groups(method: str) -> bool:
    """Whether ``method`` trains on the true group labels of the training split (its own declaration)."""
    return method_class(check_method(method)).needs_train_groups


def needs_inferred_groups(method: str) -> bool:
    """Whether ``method`` needs an XRM run's inferred validation groups for the ``val_gi_wga`` criterion."""
    return not method_class(check_method(method)).infers_groups


def val_group_use(criterion: str) -> str:
    """Validation labels a selection criterion reads: 'yes' (true groups), 'inferred' (XRM's) or 'no'."""
    return {"val_wga": "yes", "val_gi_wga": "inferred"}.get(criterion, "no")


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sample_hparams(
    method: str,
    family: str,
    comb: int,
    seed: int = 0,
    *,
    dataset: str | None = None,
    fixed: dict[str, Any] | None = None,
) -> dict:
    """Hyper-parameters of combination ``comb`` (0 = defaults, see the module docstring for the ranges).

    Returns a JSON-able dict with lr, weight_decay, batch_size, epochs, optimizer, momentum, hidden, bias,
    class_balanced and the method's own keys (temperature, eta, T and lambda_up). ``seed`` does not change the
    draw (a combination is one configuration repeated over seeds); ``dataset`` sets the epoch budget of known
    datasets and CivilComments' class-balanced batches; ``fixed`` (see ``parse_override``) replaces drawn values
    (a method-specific key only where the method has it; JTT's T is drawn as a fraction of the final epochs).
    """
    check_method(method)
    check_family(family)
    if comb < 0:
        raise ConfigError(f"hyper-parameter combination index must be >= 0, got {comb}")
    del seed  # documented: combinations do not depend on the seed
    fixed = dict(fixed or {})
    hp: dict[str, Any] = recipe_defaults(family, dataset)
    rng = np.random.default_rng(_stable_seed(method, family, comb))
    if comb > 0:
        lo, hi = _LR_RANGE[(family, hp["optimizer"])]
        hp["lr"] = float(10 ** rng.uniform(lo, hi))
        hp["weight_decay"] = float(10 ** rng.uniform(*_WD_RANGE))
        bs = _BS_RANGE[family]
        if bs is not None:
            hp["batch_size"] = int(2 ** rng.uniform(*bs))
    hp["hidden"] = []
    hp["bias"] = True
    declared = method_class(method).hparams
    hp.update({k: v for k, v in fixed.items() if k not in method_keys()})
    for key, spec in declared.items():  # the method's own, in its declared order (a stable draw sequence)
        dist = spec.distribution(family)
        if dist is None:
            continue
        first = spec.default if spec.sweep_default is None else spec.sweep_default
        hp[key] = dist.comb0(first, hp) if comb == 0 else dist.draw(rng, hp)
    hp.update({k: v for k, v in fixed.items() if k in declared})
    return hp


def method_keys() -> dict[str, type | tuple[type, ...]]:
    """Every registered method's hyper-parameters with the Python type(s) each accepts."""
    keys: dict[str, type | tuple[type, ...]] = {}
    for cls in METHODS.values():
        for key, spec in cls.hparams.items():
            keys[key] = (int, float) if spec.kind in (int, float) and spec.kind is not bool else spec.kind
    return keys


# Keys a sweep may fix with --set, with the type each must have.
TRAIN_OVERRIDABLE: dict[str, type | tuple[type, ...]] = {
    "lr": (int, float),
    "weight_decay": (int, float),
    "batch_size": int,
    "epochs": int,
    "optimizer": str,
    "momentum": (int, float),
    "hidden": list,
    "class_balanced": bool,
    "bias": bool,
    "schedule": str,
    "warmup_fraction": (int, float),
    "decay_rule": str,
    "max_steps": int,
    "eval_every": int,
    "eval_every_steps": int,
    "init": str,
    "clip_grad_norm": (int, float),
    "head_dropout": (int, float),
}


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value); the value is read as JSON when it parses (numbers, lists, true/false), else
    kept as a string. Raises ``ConfigError`` for an unknown key or a value of the wrong type."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set takes KEY=VALUE, got '{text}'")
    overridable = {**TRAIN_OVERRIDABLE, **method_keys()}
    if key not in overridable:
        raise ConfigError(f"--set {key}: unknown hyper-parameter, choose from {', '.join(overridable)}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.strip()
    if key == "hidden" and isinstance(value, int):
        value = [value]
    if key == "hidden" and isinstance(value, str):
        try:
            value = [int(w) for w in value.split(",") if w.strip()]
        except ValueError:
            raise ConfigError(f"--set hidden takes comma-separated integers, got '{raw}'") from None
    expected = overridable[key]
    if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
        raise ConfigError(f"--set {key}={raw}: wrong type for {key}")
    check_training_value(key, value, raw)
    return key, value


def check_training_value(key: str, value: Any, raw: str) -> None:
    """A training setting's own range (``TrainConfig``'s check of that field: momentum in [0, 1), a finite lr > 0,
    ...), answered before any run starts; checks that tie two settings together stay with the run."""
    import dataclasses

    from ..engine.config import TrainConfig

    if key not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return
    try:
        TrainConfig(**{key: value})
    except ConfigError as e:
        if str(e).startswith(key):
            raise ConfigError(f"--set {key}={raw}: {e}") from None
