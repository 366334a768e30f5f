"""Optimisation and evaluation settings of one run (``TrainConfig``), checked when built."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, fields

from ..errors import ConfigError

# the built-in criteria (memaware.selection registers them); "auto" resolves at the first evaluation
SELECTIONS = ("auto", "val_wga", "val_gi_wga", "val_worst_class", "val_avg", "last")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "linear", "cosine", "xrm")  # torch_optim.make_schedule
DECAY_RULES = ("standard", "authors")  # torch_optim.decay_groups
HEAD_INITS = ("default", "zeros")  # models.heads.init_heads_
PRECISIONS = ("fp32", "bf16", "fp16")  # end to end: the backbone under autocast (models.end_to_end_net.EndToEndNet)
CHANNELS_LAST = ("auto", "on", "off")  # auto: on for an image backbone on CUDA, off on a CPU
DEVICE = re.compile(r"(cpu|cuda|mps|xpu|meta)(:\d+)?")  # what torch.device accepts, without importing torch


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings. ``batch_size=0`` means full batch (one step per epoch)."""

    epochs: int = 1000
    max_steps: int = 0  # > 0: stop after this many optimiser steps (the authors count steps, not epochs)
    lr: float = 1e-2
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 0
    class_balanced: bool = False  # draw mini-batches with every class equally likely (authors: CivilComments)
    seed: int = 0
    selection: str = "auto"
    eval_every: int = 1
    # > 0: evaluate every this many optimiser steps (mid-epoch too) and at the end, instead of every eval_every
    # epochs (the authors evaluate every 50 steps)
    eval_every_steps: int = 0
    # the output heads' first weights: 'default' = torch's nn.Linear rule drawn from the seed, 'zeros' = all zero
    # (the authors' code zeroes its linear heads); hidden layers and backbones are never zeroed
    init: str = "default"
    dual: bool = True  # full-batch SGD of a linear model through its Gram matrix when cheaper (memaware.dual)
    # an MLP regression stepped through its hand-derived backward, bit-identical to autograd (engine.optimisation)
    analytic: bool = True
    history_splits: tuple[str, ...] = ()
    eval_batch_size: int = 8192
    # end-to-end fine-tuning (a backbone): learning-rate schedule over the run's steps and its warm-up share
    schedule: str = "constant"
    warmup_fraction: float = 0.0
    decay_rule: str = "standard"  # which parameters weight decay applies to (torch_optim.DECAY_RULES)
    clip_grad_norm: float = 0.0  # > 0: end to end, rescale the gradient to at most this L2 norm before each step
    head_dropout: float = 0.0  # end to end: dropout on the backbone's features before the heads (training only)
    # end to end: the backbone's forward under autocast (bf16, or fp16 with a gradient scaler); heads and losses
    # stay float32. The authors trained in fp32, the default here
    precision: str = "fp32"
    channels_last: str = "auto"  # end to end: channels-last memory order for image backbones (CHANNELS_LAST)
    compile: bool = False  # end to end: torch.compile the backbone (in place)
    prefetch: int = 2  # end to end: batches loaded ahead in the background while a step runs (0: in the step)
    augment: str = "none"  # end to end on images: random training augmentation (models.augment.AUGMENTATIONS)
    device: str = "cpu"
    progress: bool = False
    progress_label: str = ""

    def __post_init__(self) -> None:
        check_types(self)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0 (0 = no limit), got {self.max_steps}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.batch_size < 0:
            raise ConfigError(f"batch_size must be >= 0 (0 = full batch), got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if self.selection not in SELECTIONS:  # a registered or module:Class criterion, never the test oracle
            from ..selection import get_criterion  # lazy: only a name beyond the built-ins needs the registry

            try:
                oracle = get_criterion(self.selection).oracle
            except ConfigError:
                raise ConfigError(
                    f"selection must be one of {', '.join(SELECTIONS)} or a registered criterion, "
                    f"got '{self.selection}'"
                ) from None
            if oracle:
                raise ConfigError(f"selection '{self.selection}' reads the test split: use it in tables only")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.eval_every_steps < 0:
            raise ConfigError(f"eval_every_steps must be >= 0 (0 = evaluate by epochs), got {self.eval_every_steps}")
        if self.eval_every_steps and self.history_splits:
            raise ConfigError("history curves are per epoch: use eval_every (epochs), not eval_every_steps, with them")
        if self.init not in HEAD_INITS:
            raise ConfigError(f"init must be one of {', '.join(HEAD_INITS)}, got '{self.init}'")
        if self.clip_grad_norm < 0:
            raise ConfigError(f"clip_grad_norm must be >= 0 (0 = no clipping), got {self.clip_grad_norm}")
        if not 0 <= self.head_dropout < 1:
            raise ConfigError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.channels_last not in CHANNELS_LAST:
            raise ConfigError(f"channels_last must be one of {', '.join(CHANNELS_LAST)}, got '{self.channels_last}'")
        if self.augment not in ("none", "flip", "crop-flip"):  # models.augment.AUGMENTATIONS (torch-free here)
            raise ConfigError(f"augment must be one of none, flip, crop-flip, got '{self.augment}'")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0 (0 = load each batch in its step), got {self.prefetch}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        if not 0 <= self.warmup_fraction <= 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.schedule in ("constant", "xrm") and self.warmup_fraction > 0:
            raise ConfigError(f"schedule '{self.schedule}' takes no warm-up: use 'linear' or 'cosine' with it")
        if self.decay_rule not in DECAY_RULES:
            raise ConfigError(f"decay_rule must be one of {', '.join(DECAY_RULES)}, got '{self.decay_rule}'")
        for s in self.history_splits:
            if s not in ("val", "test"):
                raise ConfigError(f"history_splits may hold 'val' and 'test', got '{s}'")


def check_types(cfg: TrainConfig) -> None:
    """Every field of the declared type (an int where an int is declared, a finite real number where a float is:
    ``TrainConfig(lr="0.1")`` or ``lr=nan`` is a ``ConfigError`` naming the field), and a device torch knows."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise ConfigError(f"{f.name} must be an integer, got {value!r} ({type(value).__name__})")
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{f.name} must be a number, got {value!r} ({type(value).__name__})")
            if not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        if kind == "str" and not isinstance(value, str):
            raise ConfigError(f"{f.name} must be a string, got {value!r} ({type(value).__name__})")
        if kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{f.name} must be True or False, got {value!r} ({type(value).__name__})")
    if not DEVICE.fullmatch(cfg.device):
        raise ConfigError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got '{cfg.device}'")
