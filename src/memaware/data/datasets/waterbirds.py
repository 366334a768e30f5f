"""Waterbirds (Sagawa et al. 2020): y = waterbird, a = water background (the release's ``place`` column).

Layouts (``layouts.detect`` tries them in this order, under ``--data-dir`` or with it pointing at the folder):

- ``standard``: ``waterbirds/metadata_waterbirds.csv`` (or ``metadata_waterbirds.csv``; columns id, filename, split,
  y, a, as the XRM / SubpopBench / BalancingGroups scripts write it) and the images under
  ``waterbirds/waterbird_complete95_forest2water2/``;
- ``group_dro``: ``cub/data/waterbird_complete95_forest2water2/`` (group_DRO's ``root_dir``), the group_DRO
  release ``waterbird_complete95_forest2water2.tar.gz`` as extracted (its ``metadata.csv``: img_id, img_filename, y,
  split, place, place_filename; the images beside it);
- ``tarball``: the same folder as ``waterbirds/waterbird_complete95_forest2water2/`` (where XRM's download
  extracts it) or at the root;
- ``wilds``: ``waterbirds_v1.0/metadata.csv`` (the WILDS bundle; same columns).

The release's metadata.csv becomes the standard rows as the set-up scripts do: id = img_id, filename =
img_filename, split, y, a = place (row order kept). Preprocessing as in the authors' code: resize to (S * 256/224)
squared, centre crop S, ImageNet normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import (
    ImageDataset,
    center_crop,
    check_files,
    check_image_size,
    check_metadata,
    check_root,
    group_data,
    missing_files,
    read_metadata,
)
from .layouts import Layout, Located, Need, detect
from .tables import int_column, read_csv_columns

NAME = "waterbirds"
NUM_CLASSES = 2
IMAGE_FOLDER = "waterbird_complete95_forest2water2"
TARBALL = f"{IMAGE_FOLDER}.tar.gz"
RELEASE_COLUMNS = ("img_id", "img_filename", "y", "split", "place")
_RELEASE = Need("metadata.csv", f"the metadata.csv inside {TARBALL} (group_DRO's release) or WILDS' waterbirds_v1.0")
LAYOUTS = (
    Layout(
        NAME,
        "standard",
        "metadata_waterbirds.csv of the XRM / SubpopBench set-up scripts",
        (NAME, "."),
        Need(f"metadata_{NAME}.csv", "written by the XRM / SubpopBench / BalancingGroups set-up scripts"),
    ),
    Layout(NAME, "group_dro", f"group_DRO's cub/data/{IMAGE_FOLDER}/", (f"cub/data/{IMAGE_FOLDER}",), _RELEASE),
    Layout(NAME, "tarball", f"{IMAGE_FOLDER}/metadata.csv of {TARBALL}", (f"{NAME}/{IMAGE_FOLDER}", IMAGE_FOLDER),
           _RELEASE),
    Layout(NAME, "wilds", "WILDS' waterbirds_v1.0/ bundle", ("waterbirds_v1.0",), _RELEASE),
)
HOW_TO_GET = (
    f"extract group_DRO's {TARBALL} into <data-dir>/{NAME}/, or point --data-dir at the waterbirds_v1.0/ folder "
    "that `pip install wilds` downloads"
)


def _transform(size: int):
    resize = int(size * 256 / 224)

    def transform(img: Any) -> Any:
        from PIL import Image

        return center_crop(img.resize((resize, resize), Image.BILINEAR), size, size)

    return transform


def locate(root: Path) -> Located:
    """Detects the layout under ``root`` and reads its rows (images are not checked here)."""
    found = detect(root, LAYOUTS, HOW_TO_GET)
    path = found.marker
    if found.layout.name == "standard":
        meta = read_metadata(path, NUM_CLASSES)
        ids = read_csv_columns(path, ("id",))["id"] if _has_id(path) else [str(i) for i in range(len(meta))]
        images = next((p for p in (found.folder / IMAGE_FOLDER, root / NAME / IMAGE_FOLDER) if p.is_dir()),
                      found.folder / IMAGE_FOLDER)
        return Located(found, meta, ids, images)
    cols = read_csv_columns(path, RELEASE_COLUMNS, f"of {TARBALL}: img_id, img_filename, y, split, place")
    source = str(path)
    split, y, a = (int_column(cols[c], c, source) for c in ("split", "y", "place"))
    meta = check_metadata(path, cols["img_filename"], split, y, a, NUM_CLASSES)
    return Located(found, meta, cols["img_id"], found.folder)


def _has_id(path: Path) -> bool:
    with open(path, encoding="utf-8-sig") as f:
        return "id" in [h.strip() for h in f.readline().split(",")]


def missing_inputs(loc: Located) -> list[str]:
    """The listed images that are not on disk."""
    return missing_files(loc.inputs, loc.meta.filename)


def open_waterbirds(root: str | Path, image_size: int = 224) -> ImageDataset:
    """Opens Waterbirds from any layout under ``root``; every listed image must exist. Rows load as (b, 3, S, S)."""
    root = check_root(root)
    size = check_image_size(image_size)
    loc = locate(root)
    meta = loc.meta
    check_files(loc.inputs, meta.filename, str(meta.path), f"extract {TARBALL} into {loc.inputs.parent}/")
    return ImageDataset(
        NAME, group_data(meta, NUM_CLASSES), root, meta.path, loc.inputs, meta.filename, _transform(size), size
    )
