"""Waterbirds (Sagawa et al. 2020): y = waterbird, a = water background.

Layout: ``<root>/waterbirds/metadata_waterbirds.csv`` (or ``<root>/metadata_waterbirds.csv``) and the images of
``waterbird_complete95_forest2water2.tar.gz`` under ``<root>/waterbirds/waterbird_complete95_forest2water2/``,
``filename`` being the path below that folder (``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``).
Preprocessing as in the authors' code: resize to (S * 256/224) squared, centre crop S, ImageNet normalisation.
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

NAME = "waterbirds"
NUM_CLASSES = 2
IMAGE_FOLDER = "waterbird_complete95_forest2water2"


def _transform(size: int):
    resize = int(size * 256 / 224)

    def transform(img: Any) -> Any:
        from PIL import Image

        return center_crop(img.resize((resize, resize), Image.BILINEAR), size, size)

    return transform


def open_waterbirds(root: str | Path, image_size: int = 224) -> ImageDataset:
    """Opens Waterbirds from ``root``; every listed image must exist. Rows load as (b, 3, S, S) float32."""
    root = check_root(root)
    size = check_image_size(image_size)
    path = find_metadata(root, NAME, f"metadata_{NAME}.csv")
    meta = read_metadata(path, NUM_CLASSES)
    image_dir = root / NAME / IMAGE_FOLDER
    check_files(image_dir, meta.filename, str(path), f"extract {IMAGE_FOLDER}.tar.gz into {root / NAME}/")
    return ImageDataset(
        NAME, group_data(meta, NUM_CLASSES), root, path, image_dir, meta.filename, _transform(size), size
    )
