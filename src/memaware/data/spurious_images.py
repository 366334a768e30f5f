"""A small spurious-correlation image problem written as a user would bring it: PNG files and a metadata CSV.

Each image is a glyph on a coloured background with per-image pixel noise:
- the label y is the glyph, a ring ('ring') or a bar ('bar'), faint (``contrast``), at a random place and
  thickness;
- the attribute a is the background colour ('red' or 'green'), equal to the label's own colour (ring on red,
  bar on green) for a fraction ``rho`` of the training images and half of the validation and test images;
- every pixel gets independent Gaussian noise of std ``noise``: an image-private pattern that a network can
  memorize, which is how it fits the few training images whose colour disagrees with their glyph.
The defaults put it in the paper's regime for a small network: the colour is learned first, the minority of the
training set is then fitted by memorizing its noise (training accuracy 100 %), and the faint glyph is never needed,
so ERM fails on test images whose colour disagrees with their glyph; MAT does not (BENCHMARKS.md). The CSV uses
class and split *names* (``train`` / ``val`` / ``test``), as users' tables do. Used by the tests, the README
examples and BENCHMARKS.md (``memaware synth-images``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError

LABELS = ("ring", "bar")
COLOURS = {"red": (0.72, 0.30, 0.28), "green": (0.30, 0.62, 0.32)}
ATTRS = tuple(COLOURS)  # label k's own colour is ATTRS[k]


def glyph_mask(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float mask in [0, 1] of a ring (label 0) or a vertical bar (label 1) at a random place."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    half = size / 2
    cy, cx = half + rng.uniform(-size / 8, size / 8, size=2)
    thick = rng.uniform(1.2, 2.2) * size / 32
    if label == 0:
        radius = rng.uniform(0.2, 0.3) * size
        dist = np.abs(np.hypot(yy - cy, xx - cx) - radius)
        return np.clip(thick - dist + 0.5, 0.0, 1.0)
    length = rng.uniform(0.25, 0.35) * size
    inside = np.clip(thick - np.abs(xx - cx) + 0.5, 0.0, 1.0) * np.clip(length - np.abs(yy - cy) + 0.5, 0.0, 1.0)
    return inside


def render(
    label: int, attr: int, size: int, noise: float, rng: np.random.Generator, contrast: float = 1.0
) -> np.ndarray:
    """(size, size, 3) uint8 image: the glyph, light grey at ``contrast`` 1 (fainter below), over the attribute's
    colour, plus pixel noise."""
    colour = np.array(COLOURS[ATTRS[attr]], dtype=np.float32) + rng.uniform(-0.04, 0.04, size=3)
    img = np.broadcast_to(colour, (size, size, 3)).copy()
    mask = contrast * glyph_mask(label, size, rng)[..., None]
    img = img * (1 - mask) + 0.9 * mask
    img += rng.normal(0.0, noise, size=img.shape)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def write_spurious_images(
    out_dir: str | os.PathLike,
    n_train: int = 400,
    n_val: int = 300,
    n_test: int = 300,
    size: int = 32,
    rho: float = 0.9,
    noise: float = 0.3,
    seed: int = 0,
    contrast: float = 0.25,
) -> Path:
    """Writes ``out_dir/images/*.png`` and ``out_dir/metadata.csv`` (filename, y, a, split with names) and returns
    the CSV's path. Labels are balanced within each split; a training image has its label's own colour with
    probability ``rho``, a validation or test image with probability 1/2."""
    from PIL import Image

    if min(n_train, n_val, n_test) < 4:
        raise ConfigError(f"every split needs at least 4 images, got {n_train}, {n_val}, {n_test}")
    if not 0.0 <= rho <= 1.0:
        raise ConfigError(f"rho must be in [0, 1], got {rho}")
    if size < 8 or noise < 0 or not 0.0 <= contrast <= 1.0:
        raise ConfigError(f"need size >= 8, noise >= 0, contrast in [0, 1]; got {size}, {noise}, {contrast}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for split, n, agree in (("train", n_train, rho), ("val", n_val, 0.5), ("test", n_test, 0.5)):
        labels = np.arange(n) % 2
        rng.shuffle(labels)
        for i, y in enumerate(labels.tolist()):
            a = y if rng.random() < agree else 1 - y
            name = f"images/{split}_{i:05d}.png"
            Image.fromarray(render(y, a, size, noise, rng, contrast)).save(out / name)
            rows.append((name, LABELS[y], ATTRS[a], split))
    path = out / "metadata.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("filename", "y", "a", "split"))
        writer.writerows(rows)
    return path


__all__ = ["write_spurious_images", "render", "LABELS", "ATTRS"]
