"""The one home of optimiser construction: which update strategy a run takes, and the objects that carry it out.

Four strategies, chosen per run by ``strategy_for``:

- ``"torch"``: a backbone is fine-tuned end to end (``fit(..., model_factory=...)``). ``torch.optim`` with weight
  decay per parameter group and a ``LambdaLR`` warm-up/decay schedule (``torch_optim``). Importing torch.optim
  costs ~1.5 s (``torch._dynamo``), paid once against minutes of fine-tuning.
- ``"gram"``: plain full-batch SGD of a bias-free linear head whose Gram matrix is cheaper than two passes over the
  inputs (n < d, n <= 4096): the same iterates through ``dual.DualSGD`` (Fig. 1: n = 1000, d = 1800). The
  ``"rules"`` optimiser is still built, so that a checkpoint holds the same keys whichever path ran.
- ``"rules"``: everything else on features (heads, MLPs, the Fig. 3 ensembles), and every member of a batched
  program (``engine.many``): the hand-written SGD / Adam / AdamW of ``optim`` (torch.optim's exact formulas), whose
  hyper-parameters may be per-member tensors, without torch.optim's import cost (longer than a Fig. 1 run).
- ``"analytic"``: the ``"rules"`` optimiser on a model that backpropagates by hand (``EnsembleMLP.backward_into``)
  and a method with a closed-form output gradient (``Method.loss_and_gradient``: the Fig. 3 regression). No
  autograd graph is built per step, and the parameters and gradients are views of one flat buffer each
  (``flatten_parameters``), so Adam's update is seven kernels instead of seven per parameter. The kernels are those
  autograd and the per-parameter update run, so the iterates are the same bit for bit (tests/test_fig3.py); a
  step of the Fig. 3 MLP takes 0.47 instead of 0.74 ms (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..methods import Method
from ..models.backbones import set_head_dropout
from .config import TrainConfig
from .dual import DualSGD
from .optim import SGD, Adam, Hyper, make_optimizer
from .torch_optim import make_schedule, make_torch_optimizer, warmup_steps_for

STRATEGIES = ("torch", "gram", "rules", "analytic")


@dataclass
class Optimisation:
    """A run's update machinery: ``optimizer`` (checkpointed), the ``schedule`` of the torch strategy and the
    ``dual`` stepper of the Gram strategy (None otherwise)."""

    strategy: str
    optimizer: Any
    schedule: Any = None
    dual: DualSGD | None = None


def plain_linear_forward(cls: type[Method]) -> bool:
    """Whether ``cls.forward`` is ``model(x)`` for a linear model: the class in the MRO that defines ``forward``
    is ``Method`` or declares ``plain_linear_forward`` itself (a subclass that only adds hooks inherits it)."""
    for klass in cls.__mro__:
        if "forward" in klass.__dict__:
            return klass is Method or bool(klass.__dict__.get("plain_linear_forward", False))
    return True


def strategy_for(
    cfg: TrainConfig, method: Method, model: torch.nn.Module, x_train: torch.Tensor, end_to_end: bool
) -> str:
    """'torch' end to end; 'gram' where ``DualSGD`` gives the same iterates for less (module docstring); else
    'rules'. ``x_train`` (n, ...) is the training input the run steps on."""
    if end_to_end:
        return "torch"
    gram = (
        cfg.dual
        and method.task == "classification"
        and plain_linear_forward(type(method))
        and method.active_positions is None
        and DualSGD.applicable(model, len(x_train), x_train[0].numel(), cfg)
    )
    if gram:
        return "gram"
    analytic = (
        cfg.analytic
        and method.analytic_gradient
        and plain_linear_forward(type(method))  # forward is model(x)
        and bool(getattr(model, "analytic_backward", False))
    )
    return "analytic" if analytic else "rules"


def flatten_parameters(model: torch.nn.Module) -> torch.nn.Parameter:
    """Makes every trainable parameter of ``model`` a view of one flat buffer and its ``.grad`` a view of one flat
    gradient buffer; returns the flat buffer as a leaf whose ``.grad`` is that gradient, for the optimiser."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        k = p.numel()
        p.data = flat[offset : offset + k].view_as(p)
        p.grad = grad[offset : offset + k].view_as(p)
        offset += k
    leaf = torch.nn.Parameter(flat)  # shares the storage the model's parameters now view
    leaf.grad = grad
    return leaf


def build_single(
    cfg: TrainConfig, method: Method, model: torch.nn.Module, x_train: torch.Tensor, steps_per_epoch: int,
    end_to_end: bool,
) -> Optimisation:  # fmt: skip
    """The optimisation of one run (``engine.fitting``); ``steps_per_epoch`` sizes the schedule's horizon."""
    strategy = strategy_for(cfg, method, model, x_train, end_to_end)
    if strategy == "torch":
        optimizer = make_torch_optimizer(cfg.optimizer, model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.decay_rule)
        total = cfg.max_steps or cfg.epochs * steps_per_epoch
        schedule = make_schedule(optimizer, cfg.schedule, total, warmup_steps_for(cfg.warmup_fraction, total))
        if cfg.head_dropout:
            set_head_dropout(model, cfg.head_dropout)
        return Optimisation(strategy, optimizer, schedule)
    params = [flatten_parameters(model)] if strategy == "analytic" else model.parameters()
    optimizer = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.momentum, cfg.weight_decay)
    dual = DualSGD(model, x_train, cfg.lr, cfg.weight_decay) if strategy == "gram" else None
    return Optimisation(strategy, optimizer, dual=dual)


def build_members(
    name: str, leaves: Iterable[torch.Tensor], lr: Hyper, momentum: Hyper, weight_decay: Hyper
) -> SGD | Adam:
    """The 'rules' optimiser of a batched program (``engine.many``): per-member hyper-parameters as tensors that
    broadcast against the stacked parameters (C, ...), so that member c steps as its run alone would."""
    return make_optimizer(name, leaves, lr, momentum, weight_decay)


__all__ = [
    "STRATEGIES", "Optimisation", "plain_linear_forward", "strategy_for", "flatten_parameters", "build_single",
    "build_members",
]  # fmt: skip
