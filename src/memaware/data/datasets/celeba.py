"""CelebA (Liu et al. 2015) as in the group-robustness literature: y = Blond_Hair, a = Male.

Layout: ``<root>/celeba/metadata_celeba.csv`` (or ``<root>/metadata_celeba.csv``) and the aligned images under
``<root>/celeba/img_align_celeba/`` (``000001.jpg``, ...). Unzipping the Kaggle archive nests the folder twice
(``img_align_celeba/img_align_celeba/``); that is accepted too. Preprocessing as in the authors' code: centre crop
to a square of the short side (178 px for the 178 x 218 originals), resize to S, ImageNet normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import (
    ImageDataset,
    center_crop,
    check_files,
    check_image_size,
    check_root,
    find_metadata,
    group_data,
    read_metadata,
)

NAME = "celeba"
NUM_CLASSES = 2
IMAGE_FOLDER = "img_align_celeba"


def _transform(size: int):
    def transform(img: Any) -> Any:
        from PIL import Image

        side = min(img.size)
        return center_crop(img, side, side).resize((size, size), Image.BILINEAR)

    return transform


def _image_dir(root: Path, first: str) -> Path:
    """``celeba/img_align_celeba/``, or the doubly nested folder a Kaggle unzip leaves when that holds the files."""
    plain = root / NAME / IMAGE_FOLDER
    nested = plain / IMAGE_FOLDER
    if not (plain / first).exists() and (nested / first).exists():
        return nested
    return plain


def open_celeba(root: str | Path, image_size: int = 224) -> ImageDataset:
    """Opens CelebA from ``root``; every listed image must exist. Rows load as (b, 3, S, S) float32."""
    root = check_root(root)
    size = check_image_size(image_size)
    path = find_metadata(root, NAME, f"metadata_{NAME}.csv")
    meta = read_metadata(path, NUM_CLASSES)
    image_dir = _image_dir(root, meta.filename[0])
    check_files(image_dir, meta.filename, str(path), f"unzip img_align_celeba.zip into {root / NAME}/")
    return ImageDataset(
        NAME, group_data(meta, NUM_CLASSES), root, path, image_dir, meta.filename, _transform(size), size
    )
