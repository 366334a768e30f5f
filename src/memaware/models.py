"""Models: a backbone (identity for a linear model, or an MLP) and several linear heads in one matmul.

``MultiHeadNet(x)`` returns logits of shape (n, H, K): H heads over K classes computed by a single
(d_feat, H * K) matrix product, so XRM's twin heads and MAT's three heads cost one GEMM, not three.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MultiHead(nn.Module):
    """H linear heads over the same features: (n, d) -> (n, H, K), one matmul."""

    def __init__(self, in_dim: int, num_classes: int, num_heads: int = 1, bias: bool = False):
        super().__init__()
        self.num_heads, self.num_classes = num_heads, num_classes
        # same init distribution as H separate nn.Linear(in_dim, K): kaiming-uniform depends on fan_in only
        self.linear = nn.Linear(in_dim, num_heads * num_classes, bias=bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(feats).view(feats.shape[0], self.num_heads, self.num_classes)


class MultiHeadNet(nn.Module):
    """Backbone + ``MultiHead``. ``hidden=()`` gives the paper's linear model f(x) = W x (no bias by default)."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        num_heads: int = 1,
        hidden: Sequence[int] = (),
        bias: bool = False,
        activation: str = "relu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{activation}', choose from {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            if h < 1:
                raise ConfigError(f"hidden layer widths must be >= 1, got {list(hidden)}")
            layers += [nn.Linear(width, h, bias=True), ACTIVATIONS[activation]()]
            width = h
        self.backbone = nn.Sequential(*layers) if layers else nn.Identity()
        self.heads = MultiHead(width, num_classes, num_heads, bias=bias)
        self.feature_dim = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, d_feat)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, H, K) logits."""
        return self.heads(self.features(x))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


def build_model(
    in_dim: int,
    num_classes: int,
    num_heads: int = 1,
    hidden: Sequence[int] = (),
    bias: bool = False,
    activation: str = "relu",
    seed: int = 0,
) -> MultiHeadNet:
    """Builds a ``MultiHeadNet`` whose initial weights depend only on ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiHeadNet(in_dim, num_classes, num_heads, hidden, bias, activation)
