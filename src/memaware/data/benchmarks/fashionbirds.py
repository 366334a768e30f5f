"""FashionBirds: a Waterbirds analogue built from Fashion-MNIST garments pasted on grass or brick.

Two recipes (``build(recipe=...)``):

- ``pretrained`` (default): the paper's regime. 160 px RGB scenes (``fashionbirds_render``) embedded by an
  ImageNet-pretrained EfficientNet-Lite0 into 1280 features (``fashionbirds_features``, cached); validation and
  test 300 per group; label pair ``hard`` (below) or ``easy``.
- ``pixels``: the 784 raw pixels of 28 px composites, documented here. A linear head on them cannot memorize its
  minority examples (n >> d), so every method lands near the same worst-group accuracy: outside the paper's regime.

Construction of the ``pixels`` recipe (every draw seeded by ``seed``):

- Label y: the garment's Fashion-MNIST class, T-shirt/top (0) or Shirt (6) -> y = 0; Pullover (2) or Coat (4) ->
  y = 1. Shirt vs Pullover/Coat is Fashion-MNIST's hardest confusion, so the core feature is subtle (Waterbirds'
  bird species is too).
- Attribute a: the background, grass (a = 0) or brick (a = 1): scikit-image's bundled photos ``data.grass()`` and
  ``data.brick()`` (512 x 512 grey), block-averaged by ``downsample`` (default 2, i.e. 256 x 256, so that the
  bricks' joints show at 28 px). A background is a random 28 x 28 crop: training crops come from the left half of
  each photo, validation and test crops from the right half, so no training background reappears at evaluation.
- Compositing: the garment's silhouette (pixels > 0 with interior holes filled) keeps the garment's pixels; the
  rest shows the background crop. Fashion-MNIST's faint anti-aliased edge pixels lie inside the silhouette, so the
  garment keeps a thin dark outline, as a real cut-out would.
- Groups (y, a) in the order (0, grass), (0, brick), (1, grass), (1, brick), i.e. group id = 2 y + a. Training
  sizes are exactly Waterbirds' (3498, 184, 56, 1057): y = 0 mostly on grass, y = 1 mostly on brick (95 % of
  each label on "its" background, like land birds on land). Validation and test are balanced: 300 per group
  (1200, Waterbirds has 1199) and 1000 per group (4000: Fashion-MNIST's test file holds 2000 garments per label
  and each is used once; Waterbirds' test has 5794). Garments of train and validation are drawn without
  replacement from the Fashion-MNIST training file, those of test from its test file; within a label both classes
  are pooled and drawn uniformly.
- Features x: the 784 composited pixels scaled to [0, 1], row-major, *not* standardised by default. Test worst-group
  accuracy over seeds 0-2 (Adam 1e-3, batch 128, weight decay 1e-4, 30 epochs, checkpoint chosen on validation
  worst-group), ERM vs group reweighting: linear head 0.51-0.62 vs 0.75-0.77, MLP (128) 0.62-0.77 vs 0.76-0.77.
  Standardising every pixel with training statistics (``standardize=True``) removes the gap for a linear head
  (0.73-0.75 vs 0.74-0.76) and widens it for the MLP (0.42-0.57 vs 0.74-0.77).

Source: the idx files of the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``
puts ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` under /usr/share/datasets/fashion-mnist), or any folder
holding those four files (gzipped or not), e.g. the files of the original Zalando release.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ..groups import TEST, TRAIN, VAL, GroupData
from .common import check_fraction, file_signature, require, scaled, standardize_columns, to_group_data

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
APT_LINE = "apt-get install -y dataset-fashion-mnist"
SKIMAGE_LINE = "pip install 'memaware[benchmarks]' (or: pip install scikit-image)"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
LABEL_CLASSES = ((0, 6), (2, 4))  # y = 0: T-shirt/top, Shirt; y = 1: Pullover, Coat
CLASS_NAMES = {0: "T-shirt/top", 2: "Pullover", 4: "Coat", 6: "Shirt"}
TEXTURES = ("grass", "brick")  # a = 0, a = 1
TRAIN_GROUP_SIZES = (3498, 184, 56, 1057)  # Waterbirds' training groups (y, a) = (0,0), (0,1), (1,0), (1,1)
VAL_PER_GROUP = 300
TEST_PER_GROUP = 1000
SIDE = 28


def _find(source: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (source / name).is_file():
            return source / name
    raise DataError(
        f"{source}: no Fashion-MNIST file {stem}[.gz]; install it with `{APT_LINE}` "
        f"(files land in {DEFAULT_SOURCE}) or pass --source DIR holding the four idx files"
    )


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST format, optionally gzipped) -> read-only uint8 array of its shape, e.g. (n, 28, 28).

    Decoded once per process and file version (sweeps build the benchmark for many seeds).
    """
    return _read_idx(*file_signature(path))


@functools.lru_cache(maxsize=8)
def _read_idx(resolved: str, mtime_ns: int, size: int) -> np.ndarray:
    del mtime_ns, size  # part of the cache key only
    path = Path(resolved)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable idx file ({type(e).__name__})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: truncated idx file ({len(raw) - header} bytes of data for shape {tuple(dims)})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(source: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """{"train_images": (60000, 28, 28) uint8, "train_labels": (60000,), "test_images": (10000, 28, 28), ...}."""
    root = Path(source) if source is not None else DEFAULT_SOURCE
    if not root.is_dir():
        raise DataError(
            f"{root}: no such folder; install Fashion-MNIST with `{APT_LINE}` (files land in {DEFAULT_SOURCE}) "
            "or pass --source DIR holding the four idx files"
        )
    out = {key: read_idx(_find(root, stem)) for key, stem in FILES.items()}
    for part in ("train", "test"):
        images, labels = out[f"{part}_images"], out[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or labels.shape != (len(images),):
            raise DataError(
                f"{root}: {part} images {images.shape} and labels {labels.shape} are not (n, 28, 28) and (n,)"
            )
    return out


@functools.lru_cache(maxsize=2)
def load_textures(downsample: int) -> tuple[np.ndarray, ...]:
    """(grass, brick) as read-only (512 / downsample, 512 / downsample) float32 in [0, 1] (block means)."""
    skdata = require("skimage.data", SKIMAGE_LINE)
    out = []
    for name in TEXTURES:
        img = np.asarray(getattr(skdata, name)(), dtype=np.float64)
        if img.ndim == 3:  # should a future release ship the photo in colour: grey as the channel mean
            img = img.mean(axis=2)
        h, w = (img.shape[0] // downsample) * downsample, (img.shape[1] // downsample) * downsample
        blocks = img[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample)
        texture = (blocks.mean(axis=(1, 3)) / 255.0).astype(np.float32)
        texture.setflags(write=False)  # shared by every later call
        out.append(texture)
    return tuple(out)


def random_crops(texture: np.ndarray, n: int, half: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 28, 28) crops of ``texture`` at uniform positions inside its left (half 0) or right (half 1) half."""
    h, w = texture.shape
    width = w // 2
    rows = rng.integers(0, h - SIDE + 1, size=n)
    cols = half * width + rng.integers(0, width - SIDE + 1, size=n)
    offs = np.arange(SIDE)
    return texture[rows[:, None, None] + offs[None, :, None], cols[:, None, None] + offs[None, None, :]]


def composite(garments: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 garments on (n, 28, 28) float backgrounds -> (n, 28, 28) float32 in [0, 1]."""
    ndimage = require("scipy.ndimage", SKIMAGE_LINE)
    # 4-connectivity inside each image only (no connection along the batch axis)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    # dark garment pixels (value 0) inside the outline belong to the garment, not to the background
    silhouette = ndimage.binary_fill_holes(garments > 0, structure=structure)
    return np.where(silhouette, garments.astype(np.float32) / 255.0, backgrounds).astype(np.float32)


RECIPES = ("pretrained", "pixels")


def build(
    seed: int = 0,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    recipe: str = "pretrained",
    pair: str = "hard",
    train_groups: str = "waterbirds",
    scale: float = 1.0,
    val_per_group: int = VAL_PER_GROUP,
    test_per_group: int | None = None,
    downsample: int = 2,
    standardize: bool = False,
    progress: bool = False,
    weights: str | None = None,
) -> GroupData:
    """FashionBirds (module docstring) as a ``GroupData``: x float32 (n, 1280) pretrained features or (n, 784)
    pixels, y, a in {0, 1}, split 0/1/2.

    ``pair``: hard or easy label pair; ``train_groups``: waterbirds (Waterbirds' training sizes) or balanced (the
    same total, even groups: the balanced-data ceiling's data). ``scale`` in (0, 1] multiplies every group size (at
    least 1 each; for quick tests). ``test_per_group``: default 300 (pretrained) or 1000 (pixels). ``cache_dir``
    holds the pretrained features; ``progress`` shows the extraction's bar; ``weights`` overrides the wheel's
    EfficientNet-Lite0 file. ``downsample`` applies to the pixels recipe only.
    """
    from . import fashionbirds_features as features
    from . import fashionbirds_render as render

    scale = check_fraction("scale", scale)
    render.check_choice("recipe", recipe, dict.fromkeys(RECIPES))
    render.check_choice("pair", pair, render.PAIRS)
    render.check_choice("train_groups", train_groups, render.TRAIN_GROUPS)
    if recipe == "pretrained":
        return features.build_pretrained(
            seed, source, cache_dir, pair=pair, train_groups=train_groups, scale=scale, val_per_group=val_per_group,
            test_per_group=render.PER_GROUP if test_per_group is None else test_per_group, standardize=standardize,
            progress=progress, weights=weights,
        )  # fmt: skip
    if test_per_group is None:
        test_per_group = TEST_PER_GROUP
    label_classes = render.PAIRS[pair]
    train_sizes = render.TRAIN_GROUPS[train_groups]
    if not 1 <= int(downsample) <= 512 // (2 * SIDE):
        raise ConfigError(f"downsample must be in 1..{512 // (2 * SIDE)} (a 28 px crop per half), got {downsample}")
    if val_per_group < 1 or test_per_group < 1:
        raise ConfigError(f"val_per_group and test_per_group must be >= 1, got {val_per_group}, {test_per_group}")
    fm = load_fashion_mnist(source)
    textures = load_textures(int(downsample))
    counts = {
        TRAIN: [scaled(n, scale) for n in train_sizes],
        VAL: [scaled(val_per_group, scale)] * 4,
        TEST: [scaled(test_per_group, scale)] * 4,
    }
    # independent streams: garments drawn do not depend on how crops are drawn, and vice versa
    rng_garments = np.random.default_rng([seed, 0])
    rng_crops = np.random.default_rng([seed, 1])
    pools: dict[tuple[str, int], np.ndarray] = {}
    for part in ("train", "test"):
        labels = fm[f"{part}_labels"]
        for y, classes in enumerate(label_classes):
            pools[part, y] = rng_garments.permutation(np.flatnonzero(np.isin(labels, classes)))
    used = {key: 0 for key in pools}
    xs, ys, as_, splits = [], [], [], []
    for split in (TRAIN, VAL, TEST):
        part = "test" if split == TEST else "train"
        for group, n in enumerate(counts[split]):
            y, a = divmod(group, 2)
            start = used[part, y]
            if start + n > len(pools[part, y]):
                raise ConfigError(
                    f"FashionBirds needs {start + n} garments of label {y} from the Fashion-MNIST {part} file, "
                    f"which has {len(pools[part, y])}: lower val_per_group/test_per_group"
                )
            ids = pools[part, y][start : start + n]
            used[part, y] = start + n
            crops = random_crops(textures[a], n, half=0 if split == TRAIN else 1, rng=rng_crops)
            xs.append(composite(fm[f"{part}_images"][ids], crops).reshape(n, SIDE * SIDE))
            ys.append(np.full(n, y))
            as_.append(np.full(n, a))
            splits.append(np.full(n, split))
    x = np.concatenate(xs)
    split_arr = np.concatenate(splits)
    if standardize:
        x = standardize_columns(x, split_arr)
    name = "fashionbirds" if pair == "hard" else f"fashionbirds-{pair}"
    return to_group_data(x, np.concatenate(ys), np.concatenate(as_), split_arr, name)
