"""FashionBirds in RGB (the paper's regime): which garment on which background crop for every row, and the renders.

A scene is a ``CANVAS`` x ``CANVAS`` (160 px) RGB image: a random crop of a tinted texture photo (scikit-image's
``grass()`` tinted green for a = 0, ``brick()`` tinted red for a = 1, both at their full 512 px) with a Fashion-MNIST
garment enlarged to ``GARMENT_FRACTION`` (0.85) of the canvas pasted in the middle. The garment keeps its grey
pixels inside its silhouette (pixels > 0 with interior holes filled, as in the 28 px recipe), enlarged bilinearly
with the silhouette as a soft alpha mask, so its edge blends over the background as a cut-out photo would.

Rows (``plan_rows``; every draw seeded by ``seed``):

- Label pairs: ``hard`` (default, the Waterbirds analogue) {T-shirt/top, Shirt} (y = 0) vs {Pullover, Coat}
  (y = 1), Fashion-MNIST's hardest confusion; ``easy`` {T-shirt/top, Dress} vs {Trouser, Sneaker}, a core task a
  pretrained network solves almost perfectly from balanced data.
- Groups (y, a), id 2 y + a. Training sizes are Waterbirds' (3498, 184, 56, 1057) or, with
  ``train_groups="balanced"``, the same total split evenly (1199 each: the data behind the balanced-data ceiling);
  validation and test 300 per group.
- Garments: training rows from the start of a seeded permutation of the Fashion-MNIST training file's garments of
  the label, validation rows from its end (so validation is the same whatever the training sizes), test rows from
  the test file. Background crops: uniform positions in the left half of the photo for training rows, the right
  half for validation and test (no training background reappears at evaluation); one seeded stream per split.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..datasets.common import IMAGENET_MEAN, IMAGENET_STD, RealDataset
from ..groups import TEST, TRAIN, VAL, GroupData
from .common import require, scaled

CANVAS = 160
GARMENT_FRACTION = 0.85
TINTS = ((0.55, 0.85, 0.35), (0.90, 0.45, 0.35))  # RGB gains of the grey photos: grass green (a=0), brick red (a=1)
PAIRS = {"hard": ((0, 6), (2, 4)), "easy": ((0, 3), (1, 7))}  # Fashion-MNIST classes of y = 0 and y = 1
TRAIN_GROUPS = {"waterbirds": (3498, 184, 56, 1057), "balanced": (1199, 1199, 1199, 1198)}
PER_GROUP = 300  # validation and test rows per group
SKIMAGE_LINE = "pip install 'memaware[benchmarks]' (or: pip install scikit-image)"
RENDER_VERSION = 1  # bump when the rendering changes: cached features keyed by it are then recomputed


@dataclass(frozen=True)
class RenderPlan:
    """Per-row render parameters, all (n,) int64: ``garment`` index into the Fashion-MNIST ``file`` (0 train,
    1 test), ``y``, ``a``, ``split`` and the background crop's top-left ``crop_row`` / ``crop_col``."""

    garment: np.ndarray
    file: np.ndarray
    y: np.ndarray
    a: np.ndarray
    split: np.ndarray
    crop_row: np.ndarray
    crop_col: np.ndarray
    pair: str

    def __len__(self) -> int:
        return len(self.y)

    def key(self, rows: np.ndarray, *extra: object) -> str:
        """Hex SHA-256 of what decides the renders of ``rows`` (their parameters, the constants, ``extra``)."""
        h = hashlib.sha256(repr((RENDER_VERSION, CANVAS, GARMENT_FRACTION, TINTS, PAIRS[self.pair], extra)).encode())
        for arr in (self.garment, self.file, self.y, self.a, self.crop_row, self.crop_col):
            h.update(np.ascontiguousarray(arr[rows], dtype=np.int64).tobytes())
        return h.hexdigest()


def check_choice(name: str, value: str, choices: dict) -> str:
    if value not in choices:
        raise ConfigError(f"option {name} must be one of {', '.join(choices)}, got '{value}'")
    return value


def plan_rows(
    labels: dict[str, np.ndarray],
    seed: int,
    pair: str = "hard",
    train_groups: str = "waterbirds",
    scale: float = 1.0,
    val_per_group: int = PER_GROUP,
    test_per_group: int = PER_GROUP,
) -> RenderPlan:
    """The rows of FashionBirds-RGB (module docstring) from the Fashion-MNIST ``labels`` {"train", "test"}: (N,)."""
    classes = PAIRS[check_choice("pair", pair, PAIRS)]
    sizes = TRAIN_GROUPS[check_choice("train_groups", train_groups, TRAIN_GROUPS)]
    if val_per_group < 1 or test_per_group < 1:
        raise ConfigError(f"val_per_group and test_per_group must be >= 1, got {val_per_group}, {test_per_group}")
    counts = {
        TRAIN: [scaled(n, scale) for n in sizes],
        VAL: [scaled(val_per_group, scale)] * 4,
        TEST: [scaled(test_per_group, scale)] * 4,
    }
    rng = np.random.default_rng([seed, 0])
    pools = {
        (file, y): rng.permutation(np.flatnonzero(np.isin(labels[part], classes[y])))
        for file, part in enumerate(("train", "test"))
        for y in (0, 1)
    }
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("garment", "file", "y", "a", "split", "row", "col")}
    half = 512 // 2
    for file, splits in ((0, (TRAIN, VAL)), (1, (TEST,))):
        for y in (0, 1):
            need = sum(counts[s][2 * y] + counts[s][2 * y + 1] for s in splits)
            if need > len(pools[file, y]):
                raise ConfigError(
                    f"FashionBirds needs {need} garments of label {y} from the Fashion-MNIST "
                    f"{'test' if file else 'train'} file, which has {len(pools[file, y])}: lower the group sizes"
                )
    for split in (TRAIN, VAL, TEST):
        crops = np.random.default_rng([seed, 1, split])
        file = 1 if split == TEST else 0
        for y in (0, 1):
            n_y = counts[split][2 * y] + counts[split][2 * y + 1]
            pool = pools[file, y]
            ids = pool[len(pool) - n_y :] if split == VAL else pool[:n_y]
            for a in (0, 1):
                n = counts[split][2 * y + a]
                take, ids = ids[:n], ids[n:]
                cols["garment"].append(take)
                for key, value in (("file", file), ("y", y), ("a", a), ("split", split)):
                    cols[key].append(np.full(n, value))
                cols["row"].append(crops.integers(0, 512 - CANVAS + 1, size=n))
                left = 0 if split == TRAIN else half
                cols["col"].append(left + crops.integers(0, half - CANVAS + 1, size=n))
    c = {k: np.concatenate(v).astype(np.int64) for k, v in cols.items()}
    return RenderPlan(c["garment"], c["file"], c["y"], c["a"], c["split"], c["row"], c["col"], pair)


def tinted_textures() -> torch.Tensor:
    """(2, 3, 512, 512) float32 in [0, 1]: grass and brick, each its grey photo times its tint."""
    skdata = require("skimage.data", SKIMAGE_LINE)
    out = []
    for name, tint in zip(("grass", "brick"), TINTS, strict=True):
        img = np.asarray(getattr(skdata, name)(), dtype=np.float32) / 255.0
        if img.ndim == 3:
            img = img.mean(axis=2)
        if img.shape != (512, 512):
            raise ConfigError(f"scikit-image's {name}() is {img.shape}, expected (512, 512)")
        out.append(torch.from_numpy(img)[None] * torch.tensor(tint).view(3, 1, 1))
    return torch.stack(out)


def silhouettes(garments: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, 28, 28) bool: pixels > 0 with interior holes filled (4-connectivity per image)."""
    ndimage = require("scipy.ndimage", SKIMAGE_LINE)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(garments > 0, structure=structure)


def render(
    garments: np.ndarray, masks: np.ndarray, textures: torch.Tensor, a: np.ndarray, row: np.ndarray, col: np.ndarray
) -> torch.Tensor:
    """(b, 28, 28) uint8 garments, their (b, 28, 28) bool silhouettes, (2, 3, 512, 512) textures and the rows'
    attribute and crop corner (b,) -> (b, 3, CANVAS, CANVAS) float32 scenes in [0, 1]."""
    side = int(round(GARMENT_FRACTION * CANVAS))
    both = torch.from_numpy(np.stack([garments / 255.0, masks], axis=1).astype(np.float32))  # (b, 2, 28, 28)
    big = F.interpolate(both, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)
    offs = torch.arange(CANVAS)
    r = torch.from_numpy(row)[:, None] + offs  # (b, CANVAS)
    c = torch.from_numpy(col)[:, None] + offs
    # gather each row's crop: texture[a_i][:, r_i, c_i] for every pixel
    scene = textures[torch.from_numpy(a)[:, None, None], :, r[:, :, None], c[:, None, :]].permute(0, 3, 1, 2)
    scene = scene.contiguous()
    top = (CANVAS - side) // 2
    window = scene[:, :, top : top + side, top : top + side]
    alpha = big[:, 1:2]
    scene[:, :, top : top + side, top : top + side] = alpha * big[:, 0:1] + (1 - alpha) * window
    return scene


class FashionBirdsImages(RealDataset):
    """FashionBirds-RGB as a ``RealDataset``: ``load(rows)`` renders those rows -> (b, 3, S, S) float32,
    ImageNet-normalised like every image dataset (scenes resized from 160 px to S when S differs), so that
    ``memaware features`` and end-to-end ``memaware train`` take it like Waterbirds."""

    modality = "image"

    def __init__(self, name: str, plan: RenderPlan, images: dict[int, np.ndarray], source: Path, image_size: int):
        x = np.arange(len(plan), dtype=np.float32)[:, None]
        data = GroupData.from_arrays(x, plan.y, plan.split, plan.a, source=name, num_classes=2)
        note = f"rendered at {CANVAS} px, fed to the backbone at {int(image_size)} px, pair {plan.pair}"
        super().__init__(name, data, source, source, notes=(note,))
        self.plan, self.image_size = plan, int(image_size)
        self.garments = np.stack([images[f][g] for f, g in zip(plan.file.tolist(), plan.garment.tolist(), strict=True)])
        self.masks = silhouettes(self.garments)
        self.textures = tinted_textures()
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def scenes(self, rows: np.ndarray) -> torch.Tensor:
        """(b,) rows -> (b, 3, 160, 160) float32 scenes in [0, 1] (not normalised)."""
        p, g, m = self.plan, self.garments[rows], self.masks[rows]
        return render(g, m, self.textures, p.a[rows], p.crop_row[rows], p.crop_col[rows])

    def _load(self, rows: np.ndarray) -> torch.Tensor:
        x = self.scenes(rows)
        if self.image_size != CANVAS and len(rows):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return (x - self.mean) / self.std


def open_fashionbirds_images(
    root: str | os.PathLike | None = None,
    image_size: int = CANVAS,
    *,
    seed: int = 0,
    pair: str = "hard",
    train_groups: str = "waterbirds",
    scale: float = 1.0,
    val_per_group: int = PER_GROUP,
    test_per_group: int = PER_GROUP,
) -> FashionBirdsImages:
    """FashionBirds-RGB from the Fashion-MNIST idx files in ``root`` (default: Debian's dataset-fashion-mnist)."""
    from .fashionbirds import DEFAULT_SOURCE, load_fashion_mnist

    if image_size < 8:
        raise ConfigError(f"image size must be >= 8 pixels, got {image_size}")
    fm = load_fashion_mnist(root)
    labels = {"train": fm["train_labels"], "test": fm["test_labels"]}
    plan = plan_rows(labels, seed, pair, train_groups, scale, val_per_group, test_per_group)
    name = "fashionbirds" if pair == "hard" else f"fashionbirds-{pair}"
    source = Path(root) if root is not None else DEFAULT_SOURCE
    return FashionBirdsImages(name, plan, {0: fm["train_images"], 1: fm["test_images"]}, source, image_size)
