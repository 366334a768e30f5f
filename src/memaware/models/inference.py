"""A backbone in inference-only form, for feature extraction on a CPU.

Two engines, both (b, C, H, W) float32 CPU tensor -> the wrapped network's (b, d) output as a CPU tensor, any
batch size, one compiled form per input size (C, H, W):

- ``onnxruntime`` (the ``onnx`` extra: ``pip install 'memaware[onnx]'``): the network exported once to ONNX in
  memory (``torch.onnx.export``, batch axis dynamic) and run by ONNX Runtime's CPU engine, on as many threads as
  torch uses. Fastest here: EfficientNet-Lite0's depthwise convolutions are memory-bound, and ONNX Runtime fuses
  convolution + batch norm + ReLU6 and runs the depthwise kernels in NHWC.
- ``torch``: the network in channels-last order, traced and frozen (``torch.jit.freeze`` +
  ``optimize_for_inference``: batch norms folded into the convolutions, oneDNN fusions). Needs nothing more than
  torch.

``auto`` (the default) takes ``onnxruntime`` when it is installed, else ``torch`` (``feature_engine`` says which).
BENCHMARKS.md ("FashionBirds feature extraction") has both engines' rates next to eager PyTorch. Both give eager
PyTorch's outputs up to float32 rounding of the fused arithmetic (max abs difference ~1e-5 on EfficientNet-Lite0
features; tests/test_feature_speed.py pins it below 1e-4).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError

ENGINES = ("auto", "onnxruntime", "torch")
ONNX_LINE = "pip install 'memaware[onnx]'"


def onnxruntime_available() -> bool:
    """Whether the ``onnxruntime`` engine can run: onnxruntime and onnx (the exporter's dependency) importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class PerShape:
    """One compiled form of ``net`` per input (C, H, W), built by ``compile(example)`` on first use."""

    name = ""

    def __init__(self, net: nn.Module):
        self.net = net.eval()
        self.forms: dict[tuple[int, ...], Callable[[torch.Tensor], torch.Tensor]] = {}

    def compile(self, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        key = tuple(images.shape[1:])
        if key not in self.forms:
            self.forms[key] = self.compile(images)
        return self.forms[key](images)


class FrozenForInference(PerShape):
    """The ``torch`` engine: a frozen channels-last trace per (C, H, W)."""

    name = "torch"

    def __init__(self, net: nn.Module):
        super().__init__(net.eval().to(memory_format=torch.channels_last))

    def compile(self, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        x = example.contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings():
            # the "same" padding's Python arithmetic on H and W is recorded as constants: intended (one per size);
            # torch.jit is marked deprecated in recent torch but still the one CPU freeze that needs no compiler
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(self.net, x, check_trace=False)
            graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return lambda images: graph(images.contiguous(memory_format=torch.channels_last)).contiguous()


class OnnxRuntimeForInference(PerShape):
    """The ``onnxruntime`` engine: an in-memory ONNX export per (C, H, W), batch axis dynamic."""

    name = "onnxruntime"

    def compile(self, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        import onnxruntime

        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings: the same constants as above
            torch.onnx.export(
                self.net, (example[:1],), buffer, dynamo=False, input_names=["images"], output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
            )  # fmt: skip
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the user's torch.set_num_threads holds here too
        options.log_severity_level = 3  # errors only: its start-up notes are not the user's business
        session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

        def run(images: torch.Tensor) -> torch.Tensor:
            (out,) = session.run(None, {"images": images.contiguous().numpy()})
            return torch.from_numpy(out)

        return run


def inference_engine(net: nn.Module, engine: str = "auto") -> PerShape:
    """``net`` wrapped by the engine ``engine`` (module docstring); ``.name`` says which one."""
    if engine not in ENGINES:
        raise ConfigError(f"feature engine must be one of {', '.join(ENGINES)}, got '{engine}'")
    if engine == "onnxruntime" and not onnxruntime_available():
        raise ConfigError(f"feature engine 'onnxruntime' needs onnxruntime and onnx: {ONNX_LINE}")
    if engine == "onnxruntime" or (engine == "auto" and onnxruntime_available()):
        return OnnxRuntimeForInference(net)
    return FrozenForInference(net)


def feature_engine(engine: str = "auto") -> str:
    """The engine ``engine`` resolves to on this installation ('onnxruntime' or 'torch')."""
    if engine == "auto":
        return "onnxruntime" if onnxruntime_available() else "torch"
    return engine


__all__ = ["ENGINES", "FrozenForInference", "OnnxRuntimeForInference", "PerShape", "feature_engine",
           "inference_engine", "onnxruntime_available"]  # fmt: skip
