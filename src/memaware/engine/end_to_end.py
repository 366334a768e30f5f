"""The end-to-end settings of a run (``TrainConfig``'s precision, channels_last, compile, prefetch) applied to its
model, and the gradient scaler fp16 needs; see docs/speed.md."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.end_to_end_net import EndToEndNet
from .config import TrainConfig


def configure_end_to_end(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Precision, channels-last, compilation and prefetching of an ``EndToEndNet`` (``TrainConfig``'s end-to-end
    fields); a caller's own model takes none but fp32 (one line)."""
    if not isinstance(model, EndToEndNet):
        if cfg.precision != "fp32" or cfg.compile or cfg.channels_last == "on" or cfg.augment != "none":
            raise ConfigError(
                "precision, compile, channels_last and augment need memaware's end-to-end model: pass backbone= "
                f"(memaware adds the heads), not a model_factory building {type(model).__name__}"
            )
        return
    images = model.dataset is not None and getattr(model.dataset, "modality", "") == "image"
    on_cuda = torch.device(cfg.device).type == "cuda"
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and images and on_cuda)
    if cfg.augment != "none" and not images:
        raise ConfigError(f"augment '{cfg.augment}' applies to images; this run's input is not an image dataset")
    model.configure(cfg.precision, channels_last, cfg.compile, cfg.prefetch, cfg.augment, cfg.seed)


def grad_scaler(cfg: TrainConfig) -> torch.amp.GradScaler | None:
    """fp16 autocast needs its loss scaled and its steps skipped on inf/nan gradients; bf16 keeps float32's
    exponent range and needs none."""
    return torch.amp.GradScaler(torch.device(cfg.device).type) if cfg.precision == "fp16" else None


__all__ = ["configure_end_to_end", "grad_scaler"]
