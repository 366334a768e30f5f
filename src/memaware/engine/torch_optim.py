"""torch.optim optimisers and learning-rate schedules for end-to-end fine-tuning (a backbone is trained).

memaware's hand-written SGD / Adam (``optim.py``) stay the choice for heads on cached features: constructing
any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (~1.5 s). Here that cost is paid once per fine-tuning run,
so torch's own optimisers are used, imported inside the functions so that importing this module stays cheap.

Weight-decay rule (``decay_groups``), as in BERT's AdamW recipe (no decay on ``bias`` and ``LayerNorm``): a
trainable parameter is *not* decayed when its local name (within its owning module) contains ``bias`` (``bias``,
MultiheadAttention's ``in_proj_bias``, ``bias_k``) or when its owning module is a normalisation layer:
``_NormBase`` (BatchNorm*, InstanceNorm*), LayerNorm, GroupNorm, or any class whose name contains ``Norm``
(Hugging Face's ``BertLayerNorm``, RMSNorm, ...). Every other trainable parameter (Linear / Conv / Embedding
weights, bare ``nn.Parameter`` tensors such as position embeddings) is decayed. The owning module decides, never
tensor dimension alone. A parameter shared by several modules (tied weights) is placed once, by its first owner.

Schedules (``make_schedule``) are ``LambdaLR`` multipliers of the base learning rate, stepped once after every
``optimizer.step()``; optimiser step t (0-based) runs with ``lr * f(t)``, where, for w warm-up and T total steps,
``linear``: f(t) = t / w for t < w, then (T - t) / (T - w) down to 0 at t = T (Hugging Face's
``get_linear_schedule_with_warmup``); ``cosine``: the same warm-up, then 0.5 * (1 + cos(pi * (t - w) / (T - w))).
Both stay 0 after T. ``xrm``: the authors' BERT schedule (facebookresearch/XRM, ``networks.py``), offered for
fidelity: with w = T // 3 + 1, f(t) = 1 - t / w for t < w, then 1 - (t - w) / T: a linear fall to 0 over the first
third, a jump back to the base rate, a linear fall to 0 at t = w + T (no warm-up at all, despite its name there).

Decay rules (``decay_groups(..., rule)``): ``standard`` is the one above; ``authors`` is the authors' grouping,
which decays exactly the parameters whose name contains ``bias`` or ``LayerNorm.weight`` and leaves every other
weight undecayed (the inverse of the BERT recipe; offered to reproduce their numbers, never the default).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

TORCH_OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "linear", "cosine", "xrm")
DECAY_RULES = ("standard", "authors")


def is_norm_layer(module: nn.Module) -> bool:
    """True for normalisation layers (their weight and bias are never decayed)."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    return isinstance(module, norm_types) or "Norm" in type(module).__name__


def decay_groups(model: nn.Module, weight_decay: float, rule: str = "standard") -> list[dict]:
    """torch.optim parameter groups: ``{'params', 'weight_decay': weight_decay}`` for decayed weights and
    ``{'params', 'weight_decay': 0.0}`` for biases and norm parameters (module docstring); empty groups are left
    out, frozen (``requires_grad=False``) parameters too."""
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    if rule not in DECAY_RULES:
        raise ConfigError(f"unknown weight-decay rule '{rule}', choose from {', '.join(DECAY_RULES)}")
    if rule == "authors":
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        authors = [p for n, p in named if "bias" in n or "LayerNorm.weight" in n]
        rest = [p for n, p in named if not ("bias" in n or "LayerNorm.weight" in n)]
        groups = [{"params": authors, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        norm = is_norm_layer(module)
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (no_decay if norm or "bias" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_torch_optimizer(
    name: str, model: nn.Module, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, rule: str = "standard"
) -> Optimizer:
    """'sgd' (momentum, coupled L2) | 'adam' (coupled L2) | 'adamw' (decoupled) over ``decay_groups(model, rule)``.
    ``momentum`` is SGD's; Adam and AdamW use torch's default betas (0.9, 0.999) and eps 1e-8."""
    import torch.optim

    if name not in TORCH_OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}', choose from {', '.join(TORCH_OPTIMIZERS)}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
    groups = decay_groups(model, weight_decay, rule)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters to optimise")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def schedule_factor(kind: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The multiplier f(step) of the base learning rate (module docstring); 1.0 for 'constant'."""
    if kind == "constant":
        return 1.0
    if kind == "xrm":
        w = total_steps // 3 + 1
        return 1.0 - step / w if step < w else max(0.0, 1.0 - (step - w) / total_steps)
    if step < warmup_steps:
        return step / warmup_steps
    decay_len = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_len) if decay_len > 0 else 1.0
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(optimizer: Optimizer, kind: str, total_steps: int, warmup_steps: int = 0) -> LRScheduler | None:
    """``LambdaLR`` for 'linear' / 'cosine' (call ``.step()`` after each ``optimizer.step()``); None for
    'constant', which takes no warm-up."""
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{kind}', choose from {', '.join(SCHEDULES)}")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps > total_steps:
        raise ConfigError(f"warmup_steps ({warmup_steps}) exceeds total_steps ({total_steps})")
    if kind in ("constant", "xrm") and warmup_steps:
        raise ConfigError(f"schedule '{kind}' takes no warm-up, got warmup_steps={warmup_steps}")
    if kind == "constant":
        return None
    from torch.optim.lr_scheduler import LambdaLR

    total, warmup = int(total_steps), int(warmup_steps)
    return LambdaLR(optimizer, lambda step: schedule_factor(kind, step, total, warmup))


def warmup_steps_for(fraction: float, total_steps: int) -> int:
    """Warm-up length as a fraction of the run, truncated as BERT's ``int(total * proportion)`` (0.1 -> 10 %)."""
    if not 0 <= fraction <= 1:
        raise ConfigError(f"warm-up fraction must be in [0, 1], got {fraction}")
    if total_steps < 0:
        raise ConfigError(f"total_steps must be >= 0, got {total_steps}")
    return int(fraction * total_steps + 1e-9)  # 1e-9: 0.29 * 100 = 28.999... must give 29
