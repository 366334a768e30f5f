"""Every registered memaware classification method as a scikit-learn estimator.

``MemawareClassifier(method="mat", method_params={...})`` trains any method by name; ``estimator_for(name)`` builds a
class per registered method (``ERMClassifier``, ``MATClassifier``, ``GroupDROClassifier``, ...) whose ``__init__``
lists the method's hyper-parameters beside the training ones, so that ``get_params``, ``clone`` and grid searches
see them. Classes for the built-in methods are attributes of this module; one registered later (a user's own
``Method`` subclass) gets its class from ``estimator_for`` or as ``memaware.estimators.<ClassName>Classifier``.

The training defaults are ``memaware train --data``'s (``memaware.estimator_protocol``): full-batch SGD, lr 1e-2,
1000 epochs, a head without bias, the last epoch kept; so ``MATClassifier()`` gives what ``memaware train --method
mat`` gives. Group attributes go to ``fit(X, y, a=...)`` (ints, -1 unknown); methods that need them (GroupDRO, RWG,
SUBG) raise ``ConfigError`` without them. See docs/estimators.md.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted

# the package's public API only (memaware/__init__.py), which stays put while the modules behind it move
from . import METHODS, ConfigError, FitResult, Method, TrainConfig, fit, make_method
from .estimator_protocol import (
    TRAINING_DEFAULTS,
    default_validation_fraction,
    group_attributes,
    group_data,
    resolve_selection,
    validation_mask,
    warn_unworkable,
)

try:  # scikit-learn >= 1.6 (check_X_y / check_array plus n_features_in_ and feature_names_in_)
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - scikit-learn 1.3 to 1.5: the same, as an inherited estimator method
    validate_data = None

HPARAM_TYPES = (bool, int, float, str)
D = TRAINING_DEFAULTS  # memaware train --data's settings, read from TrainConfig (estimator_protocol)


def method_hparams(method_cls: type[Method]) -> dict[str, Any]:
    """A method's hyper-parameters with their defaults: its declared ``hparams`` (``memaware.methods.HParam``), then
    any keyword parameter of its ``__init__`` with a bool/int/float/str default (a subclass that takes its
    hyper-parameters as plain keywords). Tensor- or None-valued inputs (held-out logits, error sets) are left out.
    """
    found = {key: spec.default for key, spec in getattr(method_cls, "hparams", {}).items()}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for p in list(inspect.signature(method_cls.__init__).parameters.values())[1:]:
        if p.kind in kinds and isinstance(p.default, HPARAM_TYPES):
            found.setdefault(p.name, p.default)
    return found


class MemawareClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier trained by ``memaware.fit`` with any registered method.

    ``method`` is a registered name, a ``package.module:Class`` reference or a ``Method`` subclass, and
    ``method_params`` its keyword hyper-parameters (not an instance: scikit-learn would take an object with
    ``get_params`` for a nested estimator, which ``Method`` is not). The model is linear (``hidden=()``) or an
    MLP, trained for ``epochs`` epochs full batch (``batch_size=0``) or in mini-batches. The defaults are ``memaware
    train --data``'s (full-batch SGD, lr 1e-2, 1000 epochs, no bias, torch's head initialisation; ``init="zeros"``
    is the authors' Table-1 choice). Without a validation part the last epoch is kept. With
    ``validation_fraction > 0`` a stratified (by class, and by group when ``a`` is given) part is held out and the
    checkpoint is chosen on it (``selection="auto"``: worst-group accuracy when every validation example has a
    known group, else the method's inferred groups, else average accuracy); a criterion that cannot be computed is
    a ``ConfigError`` before training. The same ``seed`` gives the same predictions; predictions run on a float64
    CPU copy of the model.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``fit_result_`` (``memaware.FitResult``: model, history,
    selected epoch), ``method_`` (the trained ``Method``).
    """

    method_name: ClassVar[str | None] = None  # set on the per-method classes built by ``estimator_for``
    hparam_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        method: str | type[Method] = "mat",
        method_params: dict[str, Any] | None = None,
        *,
        epochs: int = D["epochs"],
        lr: float = D["lr"],
        optimizer: str = D["optimizer"],
        momentum: float = D["momentum"],
        weight_decay: float = D["weight_decay"],
        batch_size: int = D["batch_size"],
        hidden: Sequence[int] = D["hidden"],
        activation: str = D["activation"],
        bias: bool = D["bias"],
        init: str = D["init"],
        seed: int = D["seed"],
        validation_fraction: float = D["validation_fraction"],
        selection: str = D["selection"],
        device: str = D["device"],
    ):
        self.method = method
        self.method_params = method_params
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.hidden = hidden
        self.activation = activation
        self.bias = bias
        self.init = init
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.selection = selection
        self.device = device

    # ---- fitting ------------------------------------------------------------------------------------------
    def _new_method(self) -> Method:
        """A fresh ``Method`` for one fit (the init parameters stay untouched)."""
        if self.method_name is not None:
            return make_method(self.method_name, **{k: getattr(self, k) for k in self.hparam_names})
        params = self.method_params or {}
        if not isinstance(params, dict):
            raise ConfigError(f"method_params must be a dict or None, got {type(params).__name__}")
        if isinstance(self.method, type) and issubclass(self.method, Method):
            return self.method(**params)
        if not isinstance(self.method, str):
            raise ConfigError(
                f"method must be a registered name, a module:Class reference or a Method subclass, got {self.method!r}"
            )
        return make_method(self.method, **params)

    def _validate(self, X: Any, reset: bool = True, **y: Any) -> Any:
        """X (and ``y=...`` when given, even None) through check_X_y / check_array; sets or checks n_features_in_."""
        kwargs = {"dtype": np.float32, "reset": reset, **y}
        if validate_data is not None:
            return validate_data(self, X, **kwargs)
        return self._validate_data(X, **kwargs)  # pragma: no cover - scikit-learn < 1.6

    def fit(self, X: Any, y: Any, a: Any = None) -> MemawareClassifier:
        """Trains on (X, y); ``a`` (n,) holds each example's group attribute (int, -1 unknown) when known."""
        X, y = self._validate(X, y=y)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        name = type(self).__name__
        if len(classes) < 2:
            raise ValueError(f"{name} needs samples of at least 2 classes in y, got 1 class ({classes[0]!r})")
        method = self._new_method()
        if a is None and method.needs_train_groups:
            raise ConfigError(
                f"{name}: method '{method.name}' needs the training group attributes: call fit(X, y, a=...) "
                "with an int array (-1 = unknown)"
            )
        if a is not None:
            a = group_attributes(a, name)
            check_consistent_length(X, a)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        val = validation_mask(y_enc, a, self.validation_fraction, self.seed)
        selection = resolve_selection(method, self.selection, val, a, name)
        warn_unworkable(method, self.batch_size, name)
        data = group_data(X, y_enc, a, val, len(classes), name)
        config = TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            init=self.init,
            seed=self.seed,
            selection=selection,
            device=self.device,
        )
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        model_kwargs = {"hidden": tuple(int(h) for h in hidden), "bias": bool(self.bias), "activation": self.activation}
        result = fit(data, method, config, model_kwargs=model_kwargs)
        self.classes_ = classes
        self.fit_result_: FitResult = result
        self.method_ = result.method
        return self

    # ---- prediction ---------------------------------------------------------------------------------------
    def _logits(self, X: Any) -> np.ndarray:
        """(n, K) float64 logits of the predicting head.

        The trained network runs on a float64 CPU copy, so that a row's output does not depend on the other rows
        of X (float32 BLAS results change in the last bits with the batch size). The same two steps as
        ``FitResult.predict_logits``: the model's (n, H, K) outputs, then the method's predicting head.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        result = self.fit_result_
        model = copy.deepcopy(result.model).to(device="cpu", dtype=torch.float64).eval()
        x = torch.from_numpy(np.asarray(X, dtype=np.float64))
        step = result.config.eval_batch_size
        with torch.no_grad():
            parts = [result.method.predict_logits(model(x[i : i + step])) for i in range(0, len(x), step)]
        return torch.cat(parts).numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits of the predicting head, (n, K); for two classes the logit difference (n,) as scikit-learn."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if len(self.classes_) == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, K) softmax of the predicting head's logits, columns in the order of ``classes_``."""
        logits = self._logits(X)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """(n, K) log-softmax of the predicting head's logits."""
        logits = self._logits(X)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """The class in ``classes_`` with the largest logit."""
        logits = self._logits(X)
        return self.classes_[logits.argmax(axis=1)]


# ---- one class per registered method -----------------------------------------------------------------------
TRAINING_PARAMS: dict[str, Any] = {
    p.name: p.default
    for p in list(inspect.signature(MemawareClassifier.__init__).parameters.values())[1:]
    if p.name not in ("method", "method_params")
}
_BUILT: dict[str, type[MemawareClassifier]] = {}  # method name -> estimator class (rebuilt if re-registered)


def training_defaults(method_cls: type[Method]) -> dict[str, Any]:
    """The training parameters' defaults of ``method_cls``'s estimator: ``TRAINING_PARAMS``, with a held-out part
    for a method that cannot train without one (DFR retrains its last layer on held-out groups)."""
    return {**TRAINING_PARAMS, "validation_fraction": default_validation_fraction(method_cls)}


def _class_name(name: str) -> str:
    """'<MethodClass>Classifier', or from the registered name when two methods share a class name."""
    cls_name = METHODS[name].__name__
    if sum(c.__name__ == cls_name for c in METHODS.values()) > 1:
        cls_name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", name) if part)
    return f"{cls_name}Classifier"


def estimator_for(name: str) -> type[MemawareClassifier]:
    """The scikit-learn classifier class of the registered classification method ``name``.

    Its keyword-only ``__init__`` lists the method's hyper-parameters (``method_hparams``) with their defaults,
    then the training parameters of ``MemawareClassifier``. The same class is returned on every call.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}', choose from {', '.join(sorted(METHODS))}")
    method_cls = METHODS[name]
    built = _BUILT.get(name)
    if built is not None and built.method_class is method_cls:
        return built
    if method_cls.task != "classification":
        raise ConfigError(f"method '{name}' is a {method_cls.task} method; estimators exist for classification")
    hparams = method_hparams(method_cls)
    clash = sorted(set(hparams) & (set(TRAINING_PARAMS) | {"method", "method_params"}))
    if clash:
        raise ConfigError(f"method '{name}': hyper-parameter(s) {', '.join(clash)} clash with training parameters")
    kw = inspect.Parameter.KEYWORD_ONLY
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, kw, default=v) for k, v in {**hparams, **training_defaults(method_cls)}.items()]
    )

    def __init__(self: MemawareClassifier, **params: Any) -> None:
        bound = signature.bind(self, **params)  # a TypeError for unknown names, as a written-out signature
        bound.apply_defaults()
        for key, value in list(bound.arguments.items())[1:]:
            setattr(self, key, value)

    class_name = _class_name(name)
    __init__.__signature__ = signature  # what BaseEstimator.get_params and clone read
    __init__.__qualname__ = f"{class_name}.__init__"
    namespace = {
        "__init__": __init__,
        "__doc__": _docstring(name, method_cls, hparams),
        "__module__": __name__,
        "method_name": name,
        "method_class": method_cls,
        "hparam_names": tuple(hparams),
    }
    estimator = type(class_name, (MemawareClassifier,), namespace)
    _BUILT[name] = estimator
    return estimator


def _docstring(name: str, method_cls: type[Method], hparams: dict[str, Any]) -> str:
    """The generated class's docstring: the method's summary and each hyper-parameter with its help text."""
    summary = getattr(method_cls, "summary", "") or (inspect.getdoc(method_cls) or "").split("\n")[0]
    specs = getattr(method_cls, "hparams", {})
    lines = [f"scikit-learn classifier trained with memaware method '{name}'" + (f": {summary}." if summary else ".")]
    lines += ["", "Method hyper-parameters:" if hparams else "The method has no hyper-parameters."]
    for key, default in hparams.items():
        text = getattr(specs.get(key), "help", "")
        lines.append(f"    {key} (default {default!r})" + (f": {text}" if text else ""))
    lines += ["", "Training parameters and fitted attributes as in ``MemawareClassifier``."]
    return "\n".join(lines)


def _classification_methods() -> list[str]:
    return [n for n, c in METHODS.items() if c.task == "classification"]


def __getattr__(attr: str) -> type[MemawareClassifier]:
    """``<ClassName>Classifier`` of a method registered after import (and what pickle looks up)."""
    for name in _classification_methods():
        if _class_name(name) == attr:
            return estimator_for(name)
    raise AttributeError(f"module '{__name__}' has no attribute '{attr}'")


globals().update({_class_name(n): estimator_for(n) for n in _classification_methods()})

__all__ = [
    "MemawareClassifier",
    "estimator_for",
    "method_hparams",
    "training_defaults",
    *(_class_name(n) for n in _classification_methods()),
]
