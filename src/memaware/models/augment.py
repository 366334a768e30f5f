"""Random augmentation of a training batch of images, on the device, after decoding (the decoded uint8 array stays
as it is: every epoch draws new crops and flips from the same cached pixels).

``AUGMENTATIONS``:
- ``none``: the images as decoded (the authors' XRM/MAT pipeline; the default).
- ``flip``: a horizontal flip with probability 1/2 per image.
- ``crop-flip``: group_DRO's ``--augment_data`` recipe for Waterbirds and CelebA: a random crop covering 70-100 % of
  the image's area with aspect ratio in [3/4, 4/3], resized back to H x W (bilinear), then the flip.

Draws come from a generator seeded by the run's seed and the count of augmented batches, which the model keeps in its
state dict, so a resumed run draws what an uninterrupted one would. Evaluation never augments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError

AUGMENTATIONS = ("none", "flip", "crop-flip")
CROP_AREA = (0.7, 1.0)  # group_DRO's RandomResizedCrop(scale=(0.7, 1.0), ratio=(0.75, 4/3))
CROP_RATIO = (3 / 4, 4 / 3)


def check_augment(kind: str) -> str:
    if kind not in AUGMENTATIONS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {kind!r}")
    return kind


def batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """The generator of one augmented batch: a function of (seed, batch index) only."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(batch_index)) % (2**63))


def crop_boxes(b: int, generator: torch.Generator) -> torch.Tensor:
    """(b, 4) crops as (scale_x, scale_y, centre_x, centre_y) in [-1, 1] coordinates: area in ``CROP_AREA``, aspect
    ratio log-uniform in ``CROP_RATIO``, placed uniformly inside the image (sides capped at the image's)."""
    area = torch.empty(b).uniform_(*CROP_AREA, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)
    ratio = log_ratio.exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)  # width as a fraction of the image's
    sy = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sx)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sy)
    return torch.stack([sx, sy, cx, cy], dim=1)


def augment_images(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """(b, C, H, W) float images -> the same shape, augmented by ``kind`` (``AUGMENTATIONS``). Draws are made on the
    CPU from ``generator`` (the same on any device); the pixels are computed on the images' device."""
    if kind == "none" or images.shape[0] == 0:
        return images
    b = images.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    if kind == "crop-flip":
        sx, sy, cx, cy = crop_boxes(b, generator).unbind(1)
        # one affine grid per image: x' = sx * (+-1) * x + cx (the sign flips), y' = sy * y + cy
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = torch.where(flip, -sx, sx)
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = sy
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mask = flip.to(images.device).view(b, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


class Augmentation(torch.nn.Module):
    """A model's augmentation: ``kind``, the run's ``seed`` and the count of batches augmented so far, which is the
    module's extra state (in the state dict and checkpoints: a resumed run continues the draws)."""

    def __init__(self, kind: str, seed: int):
        super().__init__()
        self.kind, self.seed, self.batches = check_augment(kind), int(seed), 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = augment_images(images, self.kind, batch_generator(self.seed, self.batches))
        self.batches += 1
        return out

    def get_extra_state(self) -> dict[str, int]:
        return {"batches": self.batches}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.batches = int(state["batches"])


__all__ = ["AUGMENTATIONS", "Augmentation", "augment_images", "batch_generator", "check_augment", "crop_boxes"]
