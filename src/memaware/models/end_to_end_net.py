"""``EndToEndNet``: a backbone fine-tuned end to end under memaware's linear heads, fed by an ``InputFeed`` (row
indices -> the backbone's input, loaded ahead), with its autocast precision, channels-last order, compilation and
training augmentation (``configure``); docs/speed.md."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .heads import MultiHead, init_linear_
from .input_feed import InputFeed

# autocast precisions of an end-to-end backbone (``EndToEndNet.configure``); fp32 runs without autocast
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class EndToEndNet(nn.Module):
    """A backbone over a ``RealDataset`` + ``models.MultiHead``, with ``models.MultiHeadNet``'s interface.

    Its input x is the dataset's (b, 1) float row-index column (``GroupData.x``): ``features(x)`` loads those rows
    through its ``models.input_feed.InputFeed`` (with ``dataset=None``: x's rows as they are), on the heads'
    device, and runs the backbone -> (b, feature_dim); ``prefetch`` announces coming batches, ``configure`` sets
    precision, channels-last and compilation;
    ``forward(x)`` -> (b, H, K) logits. Only backbone and heads are parameters (the dataset is not in the state
    dict). The heads are drawn from ``seed`` like ``models.build_model``'s. ``dropout`` (its ``p``, also set later
    through ``set_head_dropout``) drops features before the heads in training mode (BertForSequenceClassification's
    dropout before its classifier, which the authors' text runs have); evaluation never drops.
    """

    def __init__(
        self,
        dataset: Any,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        num_heads: int = 1,
        bias: bool = False,
        seed: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.dataset = dataset
        self.feed = InputFeed(dataset) if dataset is not None else None
        self.precision, self.channels_last = "fp32", False
        self.augmentation: nn.Module | None = None  # models.augment.Augmentation, set by configure
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.heads = MultiHead(feature_dim, num_classes, num_heads, bias=bias)
        init_linear_(self.heads, torch.Generator().manual_seed(int(seed)))
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 1) float row indices -> (b, feature_dim) float32 backbone features (after dropout, in training mode).
        The backbone runs under autocast at ``precision`` (bf16/fp16); its features are cast back to float32, so
        the heads and every loss stay in float32."""
        device = self.heads.linear.weight.device
        if self.feed is None:  # features in memory: the backbone takes x's rows as they are
            batch = x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x
        else:
            self.feed.to_device(device)
            batch = self.feed(x, device)
        if self.training and self.augmentation is not None and isinstance(batch, torch.Tensor) and batch.dim() == 4:
            batch = self.augmentation(batch)
        if self.precision == "fp32":  # no autocast context at all: a caller's own autocast stays in force
            feats = self.backbone(batch)
        else:
            with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[self.precision]):
                feats = self.backbone(batch)
        return self.dropout(feats.float())

    def prefetch(self, xs: list[torch.Tensor]) -> None:
        """Announces the next batches of row indices (an epoch's, an evaluation's): they load in the background
        (``models.input_feed``). Without a dataset, nothing to do."""
        if self.feed is not None:
            from .input_feed import as_row_array

            self.feed.to_device(self.heads.linear.weight.device)
            self.feed.expect([as_row_array(x) for x in xs])

    def prefetch_nested(self, xs: list[torch.Tensor]) -> AbstractContextManager:
        """A context in which ``xs`` (an evaluation's chunks) load ahead of the batches announced before, which are
        taken up again when it ends."""
        if self.feed is None:
            return nullcontext()
        from .input_feed import as_row_array

        self.feed.to_device(self.heads.linear.weight.device)
        return self.feed.nested([as_row_array(x) for x in xs])

    def configure(
        self, precision: str = "fp32", channels_last: bool = False, compile: bool = False, prefetch: int = 2,
        augment: str = "none", seed: int = 0,
    ) -> None:  # fmt: skip
        """How the backbone runs: autocast ``precision`` (fp32, bf16, fp16), channels-last memory order for a
        convolutional backbone, ``torch.compile`` (in place: the state dict keeps its keys), how many batches
        load ahead (0: each in its step), and the training images' random ``augment`` (``models.augment``, drawn
        from ``seed``; its draw count joins the state dict)."""
        from .augment import Augmentation, check_augment

        if check_augment(augment) != "none":
            self.augmentation = Augmentation(augment, seed)
        if precision not in AUTOCAST_DTYPES and precision != "fp32":
            raise ConfigError(f"precision must be one of fp32, {', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
        self.precision, self.channels_last = precision, bool(channels_last)
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if self.feed is not None:
            self.feed.depth, self.feed.channels_last = int(prefetch), self.channels_last
        if compile:
            self.backbone.compile()

    def feed_stats(self) -> dict[str, float]:
        """{"images", "wait_s"} fed so far (``models.input_feed.InputFeed.stats``; ``engine.progress`` takes
        differences)."""
        return self.feed.stats() if self.feed is not None else {"images": 0, "wait_s": 0.0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 1) float row indices -> (b, H, K) logits."""
        return self.heads(self.features(x))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


def set_head_dropout(model: nn.Module, p: float) -> None:
    """Sets the dropout before ``model``'s heads (an ``EndToEndNet``'s) to ``p``; a ``ConfigError`` for a model
    without one."""
    drop = getattr(model, "dropout", None)
    if not isinstance(drop, nn.Dropout):
        raise ConfigError(f"head dropout needs a model with a dropout before its heads, got {type(model).__name__}")
    drop.p = float(p)


__all__ = ["AUTOCAST_DTYPES", "EndToEndNet", "set_head_dropout"]
