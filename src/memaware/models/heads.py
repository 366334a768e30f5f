"""Models: a backbone (identity for a linear model, or an MLP) and several linear heads in one matmul.

``MultiHeadNet(x)`` returns logits of shape (n, H, K): H heads over K classes computed by a single
(d_feat, H * K) matrix product, so XRM's twin heads and MAT's three heads cost one GEMM, not three.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..lazy import no_grad

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
# what each activation module computes (nn.Tanh: torch.tanh, nn.ReLU: torch.relu, nn.GELU: exact gelu)
ACTIVATION_FUNCTIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": nn.functional.gelu}
# dL/d(pre-activation) from dL/d(output) and the output, as autograd computes it for these two (GELU needs its input)
ACTIVATION_BACKWARD = {
    "tanh": lambda grad, out: torch.ops.aten.tanh_backward(grad, out),
    "relu": lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0),
}


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


def all_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """Raw model outputs for ``x`` in eval mode, batched, sequential (aligned with x's rows), under inference mode
    (no autograd bookkeeping at all). A model that loads its input (``EndToEndNet.prefetch``) is told the chunks
    first, so they load in the background while the previous one computes."""
    was_training = model.training
    model.eval()
    chunks = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
    nested = getattr(model, "prefetch_nested", None)
    # a model that loads its own input (EndToEndNet) takes its row indices on the host, and an evaluation
    # mid-epoch keeps the epoch's own announced batches for after it
    if callable(nested):
        chunks, place, ahead = [c.cpu() for c in chunks], None, nested([c.cpu() for c in chunks])
    else:
        place, ahead = device, contextlib.nullcontext()
    try:
        with ahead, torch.inference_mode():
            if not chunks:
                out = model(x if place is None else x.to(place))
            else:
                out = torch.cat([model(c if place is None else c.to(place)) for c in chunks])
    finally:
        model.train(was_training)
    return out


def init_linear_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draws every nn.Linear in ``module`` with torch's default rule (uniform in +-1/sqrt(fan_in) for weights
    and biases, i.e. kaiming-uniform with a = sqrt(5)) from ``generator``: no global RNG, so runs in parallel
    threads stay reproducible."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features**0.5
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def init_heads_(model: nn.Module, rule: str) -> None:
    """Sets the first weights of ``model.heads`` (a ``MultiHead``) by ``rule``: 'default' keeps what the model was
    built with (torch's nn.Linear rule drawn from the seed), 'zeros' sets weights and bias to 0, as the authors'
    code does for every linear head it trains (``nn.Linear`` then ``weight.data *= 0``, ``bias.data *= 0``: the
    ResNet-50 ``fc``, BERT's classifier, the heads on precomputed features). Only the heads: hidden layers and
    backbones keep their weights (a network of zeros would have zero gradients everywhere below the heads)."""
    if rule == "default":
        return
    if rule != "zeros":
        raise ConfigError(f"unknown head initialisation '{rule}', choose from default, zeros")
    heads = getattr(model, "heads", None)
    if not isinstance(heads, MultiHead):
        raise ConfigError(f"init 'zeros' needs a model with linear heads (model.heads), got {type(model).__name__}")
    with torch.no_grad():
        for p in heads.parameters():
            p.zero_()


def build_model(
    in_dim: int,
    num_classes: int,
    num_heads: int = 1,
    hidden: Sequence[int] = (),
    bias: bool = False,
    activation: str = "relu",
    seed: int = 0,
) -> MultiHeadNet:
    """Builds a ``MultiHeadNet`` whose initial weights depend only on ``seed`` (the global RNG is not used)."""
    model = MultiHeadNet(in_dim, num_classes, num_heads, hidden, bias, activation)
    init_linear_(model, torch.Generator().manual_seed(int(seed)))
    return model


class EnsembleMLP(nn.Module):
    """E independent MLPs evaluated with batched matmuls: x (n, E, d) -> (n, E, out).

    Member e is initialised from ``seeds[e]`` exactly like a stack of ``nn.Linear`` layers (uniform in
    +-1/sqrt(fan_in) for weights and biases), so an ensemble trains E models for the price of one loop.
    """

    def __init__(
        self,
        in_dim: int,
        seeds: Sequence[int],
        hidden: Sequence[int] = (300, 300),
        out_dim: int = 1,
        activation: str = "tanh",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{activation}', choose from {sorted(ACTIVATIONS)}")
        self.activation = activation  # applied through ACTIVATION_FUNCTIONS (no module call per layer)
        self.num_members = len(seeds)
        widths = [in_dim, *hidden, out_dim]
        weights, biases = [], []
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            w, b = torch.empty(len(seeds), fan_in, fan_out), torch.empty(len(seeds), 1, fan_out)
            weights.append(w)
            biases.append(b)
        for e, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            for w, b in zip(weights, biases, strict=True):
                bound = 1.0 / w.shape[1] ** 0.5
                w[e].uniform_(-bound, bound, generator=g)
                b[e].uniform_(-bound, bound, generator=g)
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)
        self.backbone = nn.Identity()  # no shared backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_saving(x)[0]

    def layer_parameters(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """[(weight (E, fan_in, fan_out), bias (E, 1, fan_out))] per layer. Read from the lists' parameter dicts:
        indexing an ``nn.ParameterList`` costs ~2 us per item, a tenth of a Fig. 3 step for its six."""
        return list(zip(self.weights._parameters.values(), self.biases._parameters.values(), strict=True))

    def forward_saving(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[list, list[torch.Tensor]]]:
        """x (n, E, d) -> (output (n, E, out), saved): ``saved`` holds the layers' parameters and every layer's
        input (E, n, width), what ``backward_into`` needs."""
        h = x.transpose(0, 1)  # (E, n, d)
        layers, inputs = self.layer_parameters(), []
        act = ACTIVATION_FUNCTIONS[self.activation]  # the modules' own function, without a module call per layer
        last = len(layers) - 1
        for i, (w, b) in enumerate(layers):
            inputs.append(h)
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = act(h)
        return h.transpose(0, 1), (layers, inputs)  # (n, E, out)

    @property
    def analytic_backward(self) -> bool:
        """Whether ``backward_into`` can differentiate this activation from its output alone (tanh, relu)."""
        return self.activation in ACTIVATION_BACKWARD

    @no_grad
    def backward_into(self, saved: tuple[list, list[torch.Tensor]], grad_out: torch.Tensor) -> None:
        """Backpropagates dL/d(output) (n, E, out) through the forward pass ``forward_saving`` ``saved`` and writes
        every parameter's gradient into its existing ``.grad`` (``out=``, nothing allocated there).

        The kernels and operand layouts are those autograd takes for ``baddbmm`` (dW = h^T g, db = sum_n g,
        dh = g W^T) and for the activation (``tanh_backward`` / ``threshold_backward`` on the layer's output),
        so the gradients equal ``loss.backward()``'s bit for bit (tests/test_fig3.py pins it).
        """
        act_backward = ACTIVATION_BACKWARD[self.activation]
        g = grad_out.transpose(0, 1)  # (E, n, out)
        layers, inputs = saved
        for i in range(len(layers) - 1, -1, -1):
            (w, b), h = layers[i], inputs[i]
            torch.bmm(h.transpose(1, 2), g, out=w.grad)
            torch.sum(g, 1, keepdim=True, out=b.grad)
            if i > 0:  # h is the previous layer's activation output
                g = act_backward(g.bmm(w.transpose(1, 2)), h)
