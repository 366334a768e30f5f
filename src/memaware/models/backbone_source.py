"""Where a run's backbone comes from, and the heads memaware puts on it.

A backbone maps a dataset's raw batch (``RealDataset.load``: images (b, 3, S, S) float32, a list of b strings, or
a dict of (b, L) token tensors; for ``GroupData`` features, the (b, d_in) rows of x) to (b, d) features. It may be
given as
- a catalogue name (``models.catalog.BACKBONES``: resnet50, bert, efficientnet-lite0, tiny-cnn, tiny-text);
- a reference ``package.module:name`` or ``path/to/file.py:name`` to a class or a function that, called with no
  argument, returns an ``nn.Module`` (the user's own network; ``memaware.references``);
- in Python, a zero-argument callable returning an ``nn.Module``, or an ``nn.Module`` itself, deep-copied for each
  model so that every run (XRM's twins, MAT's phase 2, each audit model) starts from the weights it had when given.

A user's backbone is built under ``torch.manual_seed(seed)`` inside a forked RNG (the global RNG is left as it was),
so ``--seed`` fixes its initialisation. Its feature width d is found by one forward pass on two training rows in
eval mode; a module that fails on them, or returns anything but a finite float (b, d) tensor, is refused in one
``ConfigError`` line naming what it returned, before any training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..references import import_reference, is_reference
from .backbones import batch_to, make_backbone
from .catalog import BACKBONES, DEFAULT_MAX_LENGTH
from .end_to_end_net import EndToEndNet

BackboneLike = "str | nn.Module | Callable[[], nn.Module]"
PROBE_ROWS = 2


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def describe_batch(batch: Any) -> str:
    """'images (2, 3, 32, 32) float32', 'a list of 2 strings', 'token tensors {input_ids: (2, 128)}'."""
    if isinstance(batch, torch.Tensor):
        kind = "images" if batch.dim() == 4 else "a tensor"
        return f"{kind} {tuple(batch.shape)} {str(batch.dtype).replace('torch.', '')}"
    if isinstance(batch, dict):
        return "token tensors {" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in batch.items()) + "}"
    return f"a list of {len(batch)} strings"


def describe_output(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)} ({str(out.dtype).replace('torch.', '')})"
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of {len(out)} items"
    return f"a {type(out).__name__}"


class BackboneSource:
    """Builds fresh copies of one backbone (see the module docstring for the accepted forms).

    ``label`` names it in records ('tiny-cnn', 'mymodel:SmallCNN', 'SmallCNN instance'); ``catalogued`` says
    whether it is one of memaware's own (whose feature width is known without a probe)."""

    def __init__(self, backbone: Any, weights: Any = None, max_length: int = DEFAULT_MAX_LENGTH):
        self.weights, self.max_length = weights, max_length
        self.catalogued = isinstance(backbone, str) and not is_reference(backbone)
        self._instance: nn.Module | None = None
        self._build: Callable[[], Any] | None = None
        if isinstance(backbone, str):
            self.label = backbone
            if self.catalogued:
                if backbone not in BACKBONES:
                    raise ConfigError(
                        f"unknown backbone '{backbone}', choose from {', '.join(BACKBONES)} or give "
                        "package.module:name (your own nn.Module class or a function returning one)"
                    )
            else:
                self._build = self._resolve(backbone)
        elif isinstance(backbone, nn.Module):
            self.label = f"{type(backbone).__name__} instance"
            self._instance = backbone
        elif callable(backbone):
            self.label = getattr(backbone, "__qualname__", type(backbone).__name__)
            self._build = backbone
        else:
            raise ConfigError(
                f"backbone must be a name, package.module:name, an nn.Module or a function returning one, got "
                f"{type(backbone).__name__}"
            )
        if weights is not None and not self.catalogued:
            raise ConfigError(f"--weights applies to memaware's backbones; '{self.label}' loads its own weights")

    @staticmethod
    def _resolve(ref: str) -> Callable[[], Any]:
        obj = import_reference(ref, "backbone")
        if isinstance(obj, nn.Module):
            raise ConfigError(
                f"backbone '{ref}' is an nn.Module instance; give its class or a function returning a fresh one "
                "(every run needs its own copy)"
            )
        if not callable(obj):
            raise ConfigError(f"backbone '{ref}' is a {type(obj).__name__}, not a class or function")
        return obj

    def modality(self) -> str | None:
        """'image' / 'text' for a catalogued backbone; None for a user's (any input it accepts)."""
        return BACKBONES[self.label] if self.catalogued else None

    def check_input(self, modality: str) -> None:
        """Refuses a catalogued backbone whose input is not the data's ``modality`` (a user's own takes any)."""
        if self.catalogued and self.modality() != modality:
            fits = [b for b, m in BACKBONES.items() if m == modality]
            raise ConfigError(
                f"backbone '{self.label}' takes {self.modality()} input but the data is {modality}"
                + (f"; choose from {', '.join(fits)}" if fits else "; give your own as package.module:name")
            )

    def build(self, seed: int = 0) -> tuple[nn.Module, int | None]:
        """A fresh backbone and, for catalogued ones, its feature width (None: probe it)."""
        if self.catalogued:
            return make_backbone(self.label, self.weights, seed=seed, max_length=self.max_length)
        if self._instance is not None:
            return copy.deepcopy(self._instance), None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            try:
                module = self._build()
            except Exception as e:  # the user's constructor: one line, the run has not started
                raise ConfigError(
                    f"backbone '{self.label}': calling it with no argument failed ({type(e).__name__}: "
                    f"{_first_line(e)})"
                ) from None
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"backbone '{self.label}' returned {describe_output(module)}, not a torch.nn.Module"
            )
        return module, None

    def probe(self, module: nn.Module, batch: Any, device: str | torch.device = "cpu") -> int:
        """The feature width d of ``module`` on ``batch`` (one eval-mode forward without gradients)."""
        was_training = module.training
        module.to(device).eval()
        try:
            with torch.no_grad():
                out = module(batch_to(batch, device))
        except Exception as e:
            raise ConfigError(
                f"backbone '{self.label}' failed on {describe_batch(batch)} ({type(e).__name__}: {_first_line(e)}); "
                "it must map the dataset's batch to (b, d) features"
            ) from None
        finally:
            module.train(was_training)
        b = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
        ok = isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == b and out.shape[1] >= 1
        if not ok:
            raise ConfigError(
                f"backbone '{self.label}' must map {describe_batch(batch)} to (b, d) features; it returned "
                f"{describe_output(out)}"
            )
        if not out.is_floating_point() or not torch.isfinite(out).all():
            raise ConfigError(f"backbone '{self.label}' returned non-finite or non-float features ({out.dtype})")
        return int(out.shape[1])


def sample_rows(dataset: Any, rows: int = PROBE_ROWS) -> Any:
    """The raw batch of the first ``rows`` training rows of a ``RealDataset`` (or of ``GroupData`` features)."""
    from ..data.groups import TRAIN

    data = getattr(dataset, "data", dataset)
    idx = data.indices(TRAIN)[:rows]
    if hasattr(dataset, "load"):
        return dataset.load(idx)
    return data.x[idx]


def end_to_end_factory(
    dataset: Any,
    backbone: Any,
    *,
    weights: Any = None,
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    bias: bool = False,
    device: str | torch.device = "cpu",
) -> Callable[[int], EndToEndNet]:
    """``model_factory(num_heads)`` for ``fit``: a fresh ``backbone`` (module docstring) under memaware's heads,
    ``EndToEndNet`` -> (b, num_heads, K) logits. ``dataset`` is a ``RealDataset`` (its rows are loaded for each
    batch) or a ``GroupData`` (the backbone takes x's rows as they are). Checks the backbone now (its input
    modality, one probe forward), so that a bad one fails before any training."""
    source = BackboneSource(backbone, weights, max_length)
    data = getattr(dataset, "data", dataset)
    source.check_input(getattr(dataset, "modality", "features"))
    first, dim = source.build(seed)
    if dim is None:
        dim = source.probe(first, sample_rows(dataset), device)
    loader = dataset if hasattr(dataset, "load") else None
    built = [first]  # the probed instance serves the first model: a pretrained load happens once less

    def factory(num_heads: int) -> EndToEndNet:
        net = built.pop() if built else source.build(seed)[0]
        return EndToEndNet(loader, net, dim, data.num_classes, num_heads, bias=bias, seed=seed)

    factory.backbone_label = source.label  # type: ignore[attr-defined]  # for run records
    factory.feature_dim = dim  # type: ignore[attr-defined]
    return factory


__all__ = ["BackboneSource", "end_to_end_factory", "describe_batch", "sample_rows"]
