"""FashionCelebA: a CelebA analogue in the paper's memorization regime, from Fashion-MNIST garments photographed on
a dark or a bright backdrop with per-image grain.

CelebA (blond hair x male) differs from Waterbirds in three ways that matter to the paper: the training set is
large (162,770 faces), the label is imbalanced (15 % blond) and the minority group is tiny (1,387 blond men,
0.85 %), and ERM's network, fine-tuned end to end, fits those few blond men during training and then fails on the
test set's: it memorizes them. A linear head on n >> d real features cannot do that (UCI Adult, the paper's Case
1), so this analogue gives its images what a CelebA photo has and a 28 px garment lacks: image-private detail
that a model can use to fit one example without learning anything that transfers.

Construction (every draw seeded by ``seed``):

- Label y: the garment's Fashion-MNIST class, footwear (Sandal 5, Sneaker 7, Ankle boot 9) -> y = 1, tops
  (T-shirt/top 0, Pullover 2, Coat 4) -> y = 0. The core feature is easy to see, as blond hair is.
- Attribute a: the backdrop's brightness, dark (a = 0, grey level 0.3) or bright (a = 1, 0.3 + ``shift`` = 0.6).
- Image: a ``canvas`` x ``canvas`` (36) grey picture, the 28 x 28 garment at its centre (pixels > 0.02 keep the
  garment), the rest the backdrop, and every pixel plus Gaussian grain of std ``grain`` (0.3), drawn per image.
  The grain is the image-private detail; the 512 backdrop pixels carry nothing else.
- Groups (y, a) in the order (tops, dark), (tops, bright), (footwear, dark), (footwear, bright). Training sizes
  are CelebA's proportions (71,629 / 66,874 / 22,880 / 1,387) on ``n_train`` = 10,000 images: (4401, 4108, 1406,
  85), i.e. 14 % footwear and a minority, footwear on a bright backdrop, of 0.85 %. Validation and test keep a
  2:1 label imbalance with the backdrop independent of the label: (600, 600, 300, 300) each, so that the minority
  group has 300 images to be judged on (CelebA's test split has 180). Training garments come from the
  Fashion-MNIST training file, validation and test garments from its test file (disjoint).
- Features x: the canvas' pixels (1,296), standardised with training statistics.
- The regime (seed 0, the L2-logistic head ERM converges to, weight decay 1e-4): training accuracy 100 % in every
  group, the minority included; test accuracy 95.7 / 97.2 / 88.7 % on the three large groups and 40.3 % on the
  minority. 10,000 images (6 % of CelebA) keep Table 1's sweep within ``memaware reproduce``'s budget; the same
  construction with 20,000 images on a 44 px canvas also fits every training group (docs/analogues.md).

Source: Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), as FashionBirds.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ConfigError
from ..groups import TEST, TRAIN, VAL, GroupData
from .common import check_fraction, scaled, standardize_columns, to_group_data
from .fashionbirds import SIDE, load_fashion_mnist

LABEL_CLASSES = ((0, 2, 4), (5, 7, 9))  # y = 0: T-shirt/top, Pullover, Coat; y = 1: Sandal, Sneaker, Ankle boot
CELEBA_TRAIN = (71629, 66874, 22880, 1387)  # CelebA's training groups (not blond, blond) x (female, male)
EVAL_GROUP_SIZES = (600, 600, 300, 300)  # validation and test each
BACKDROP = 0.3  # grey level of the dark backdrop (a = 0); the bright one adds ``shift``
GARMENT_THRESHOLD = 0.02  # Fashion-MNIST pixels above this belong to the garment


def render(garments: np.ndarray, a: np.ndarray, canvas: int, shift: float, grain: float,
           rng: np.random.Generator, garment: int = SIDE) -> np.ndarray:  # fmt: skip
    """(n, 28, 28) uint8 garments and (n,) backdrops -> (n, canvas * canvas) float32 pictures (module doc);
    ``garment`` 14 shrinks each garment to 14 px (2 x 2 block means) first."""
    n = len(garments)
    img = np.empty((n, canvas, canvas), dtype=np.float32)
    img[:] = (BACKDROP + shift * a.astype(np.float32))[:, None, None]
    g = garments.astype(np.float32) / 255.0
    if garment != SIDE:
        g = g.reshape(n, garment, SIDE // garment, garment, SIDE // garment).mean(axis=(2, 4))
    off = (canvas - garment) // 2
    centre = img[:, off : off + garment, off : off + garment]
    img[:, off : off + garment, off : off + garment] = np.where(g > GARMENT_THRESHOLD, g, centre)
    img += grain * rng.standard_normal(img.shape, dtype=np.float32)
    return img.reshape(n, canvas * canvas)


def train_group_sizes(n_train: int) -> tuple[int, ...]:
    """CelebA's training proportions (``CELEBA_TRAIN``) on ``n_train`` images, rounded, summing to ``n_train``."""
    total = sum(CELEBA_TRAIN)
    sizes = [int(round(n_train * c / total)) for c in CELEBA_TRAIN[1:]]
    return (n_train - sum(sizes), *sizes)


def build(
    seed: int = 0,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    scale: float = 1.0,
    n_train: int = 10000,
    garment: int = SIDE,
    canvas: int = 36,
    shift: float = 0.3,
    grain: float = 0.3,
    standardize: bool = True,
) -> GroupData:
    """FashionCelebA (module docstring) as a ``GroupData``: x (n, canvas^2) float32, y, a in {0, 1}.

    ``scale`` in (0, 1] keeps that fraction of every group (at least one each; for quick tests). ``cache_dir`` is
    unused (building takes a second)."""
    del cache_dir
    scale = check_fraction("scale", scale)
    if not SIDE <= int(canvas) <= 128:
        raise ConfigError(f"canvas must be in {SIDE}..128 pixels, got {canvas}")
    if garment not in (SIDE, SIDE // 2) or not garment <= int(canvas):
        raise ConfigError(f"garment must be {SIDE} or {SIDE // 2} pixels and fit the canvas, got {garment}")
    if not 1000 <= int(n_train) <= 20000:
        raise ConfigError(f"n_train must be in 1000..20000, got {n_train}")
    if shift < 0 or grain < 0:
        raise ConfigError(f"shift and grain must be >= 0, got {shift}, {grain}")
    fm = load_fashion_mnist(source)
    rng_garments = np.random.default_rng([seed, 0])
    rng_pixels = np.random.default_rng([seed, 1])
    pools, used = {}, {}
    for part in ("train", "test"):
        for y, classes in enumerate(LABEL_CLASSES):
            pools[part, y] = rng_garments.permutation(np.flatnonzero(np.isin(fm[f"{part}_labels"], classes)))
            used[part, y] = 0
    xs, ys, as_, splits = [], [], [], []
    train_sizes = train_group_sizes(int(n_train))
    for split, sizes in ((TRAIN, train_sizes), (VAL, EVAL_GROUP_SIZES), (TEST, EVAL_GROUP_SIZES)):
        part = "train" if split == TRAIN else "test"
        for group, size in enumerate(sizes):
            y, a = divmod(group, 2)
            n = scaled(size, scale)
            ids = pools[part, y][used[part, y] : used[part, y] + n]
            used[part, y] += n
            attr = np.full(n, a)
            xs.append(render(fm[f"{part}_images"][ids], attr, int(canvas), float(shift), float(grain), rng_pixels,
                             int(garment)))
            ys.append(np.full(n, y))
            as_.append(attr)
            splits.append(np.full(n, split))
    x, split_arr = np.concatenate(xs), np.concatenate(splits)
    if standardize:
        x = standardize_columns(x, split_arr)
    return to_group_data(x, np.concatenate(ys), np.concatenate(as_), split_arr, "fashionceleba")


__all__ = ["CELEBA_TRAIN", "EVAL_GROUP_SIZES", "LABEL_CLASSES", "build", "render", "train_group_sizes"]
