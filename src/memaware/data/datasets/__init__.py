"""Real datasets in the layouts people download them in (the set-up scripts' metadata_<name>.csv, the Waterbirds
tarball, the WILDS bundles, the published and Kaggle CelebA lists, group_DRO's folders, the CivilComments release,
MultiNLI's jsonl files), read into the same rows the community's metadata scripts build; nothing downloaded.

    ds = open_dataset("waterbirds", "~/data")      # RealDataset: ds.data (GroupData, x = row index), ds.load(rows)
    ds = load_table("my/metadata.csv")             # a user's own table (filename or text, y, split[, a])
    inventory.inspect("~/data")                    # what is on disk: layout, rows per split and group, missing files

See ``common`` for the contract, ``layouts`` for detection, ``tables`` for the file formats and one module per
dataset for its layouts and rules (docs/datasets.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...errors import ConfigError
from .celeba import open_celeba
from .civilcomments import open_civilcomments, open_civilcomments_fine
from .common import Batch, ImageDataset, RealDataset
from .multinli import open_multinli
from .table_dataset import is_table_path, load_table
from .waterbirds import open_waterbirds


def open_fashionbirds(root: str | os.PathLike, image_size: int = 224) -> RealDataset:
    """FashionBirds' 160 px RGB scenes (hard pair, seed 0) rendered from the Fashion-MNIST idx files in ``root``."""
    from ..benchmarks.fashionbirds_render import open_fashionbirds_images

    return open_fashionbirds_images(root, image_size)


def open_fashionbirds_easy(root: str | os.PathLike, image_size: int = 224) -> RealDataset:
    """FashionBirds' easy pair ({T-shirt, Dress} vs {Trouser, Sneaker}), rendered like ``open_fashionbirds``."""
    from ..benchmarks.fashionbirds_render import open_fashionbirds_images

    return open_fashionbirds_images(root, image_size, pair="easy")


# name -> opener(root, image_size) -> RealDataset
DATASETS: dict[str, Callable[..., RealDataset]] = {
    "waterbirds": open_waterbirds,
    "celeba": open_celeba,
    "multinli": open_multinli,
    "civilcomments": open_civilcomments,
    "civilcomments-fine": open_civilcomments_fine,
    "fashionbirds": open_fashionbirds,  # root: the Fashion-MNIST idx files (apt-get install dataset-fashion-mnist)
    "fashionbirds-easy": open_fashionbirds_easy,
}
MODALITIES = {
    "waterbirds": "image",
    "celeba": "image",
    "multinli": "text",
    "civilcomments": "text",
    "civilcomments-fine": "text",
    "fashionbirds": "image",
    "fashionbirds-easy": "image",
}


def open_dataset(name: str | os.PathLike, root: str | os.PathLike | None = None, image_size: int = 224) -> RealDataset:
    """Opens dataset ``name`` from ``root`` (validated; one-line ``DataError`` otherwise). ``image_size`` is the
    side S of the (b, 3, S, S) images that image datasets load; text datasets ignore it. ``name`` may also be the
    path of a user's metadata table (.csv) or ImageFolder tree, opened by ``load_table`` (with its defaults:
    images at their own size, pixels in [0, 1]; call ``load_table`` for its other options)."""
    if str(name).lower().endswith(".csv") or (root is None and is_table_path(name)):
        return load_table(name)
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}', choose from {', '.join(DATASETS)}, or give a table's path (.csv)")
    if root is None:
        raise ConfigError(f"dataset '{name}' needs the folder holding its files (root / --data-dir)")
    return DATASETS[name](root, image_size=image_size)


__all__ = ["DATASETS", "MODALITIES", "open_dataset", "load_table", "is_table_path", "RealDataset", "ImageDataset",
           "Batch"]  # fmt: skip
