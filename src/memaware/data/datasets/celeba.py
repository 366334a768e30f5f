"""CelebA (Liu et al. 2015) as in the group-robustness literature: y = Blond_Hair, a = Male.

Layouts (tried in this order, under ``--data-dir`` or with it pointing at the folder):

- ``standard``: ``celeba/metadata_celeba.csv`` (or ``metadata_celeba.csv``; id, filename, split, y, a);
- ``wilds``: ``celebA_v1.0/`` (WILDS: ``list_attr_celeba.csv``, ``list_eval_partition.csv``, ``img_align_celeba/``);
- ``group_dro``: ``celebA/data/`` (group_DRO's ``root_dir``: the same files);
- ``official``: ``celeba/list_attr_celeba.txt`` + ``list_eval_partition.txt`` (the published lists, where XRM's
  download puts them: a count line, a header of 40 names with a trailing space, right-aligned -1/1 values);
- ``official-tree``: the published folders ``Anno/list_attr_celeba.txt``, ``Eval/list_eval_partition.txt``,
  ``Img/img_align_celeba/``;
- ``kaggle``: ``celeba/list_attr_celeba.csv`` + ``list_eval_partition.csv`` as the Kaggle archive unzips (CRLF line
  ends, images doubly nested in ``img_align_celeba/img_align_celeba/``).

Rows follow the partition list as the set-up scripts do: id = position + 1, filename, split = partition, y =
Blond_Hair == 1, a = Male == 1 (attributes matched to the partition list by file name). Images: the first of
``img_align_celeba/img_align_celeba/``, ``img_align_celeba/``, ``Img/img_align_celeba/`` that holds the first listed
file. Preprocessing as in the authors' code: centre crop to a square of the short side, resize to S, ImageNet
normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
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
from .tables import int_column, minus_one_one, read_csv_columns, read_whitespace_table

NAME = "celeba"
NUM_CLASSES = 2
IMAGE_FOLDER = "img_align_celeba"
TARGET, ATTRIBUTE = "Blond_Hair", "Male"
_CSV_ATTR = Need("list_attr_celeba.csv", "the attribute list of the Kaggle CelebA archive or WILDS' celebA_v1.0")
_CSV_SPLIT = Need("list_eval_partition.csv", "the partition list of the Kaggle CelebA archive or WILDS' celebA_v1.0")
_TXT_ATTR = "the published CelebA Anno/list_attr_celeba.txt"
_TXT_SPLIT = "the published CelebA Eval/list_eval_partition.txt"
LAYOUTS = (
    Layout(NAME, "standard", "metadata_celeba.csv of the XRM / SubpopBench set-up scripts", (NAME, "."),
           Need("metadata_celeba.csv", "written by the XRM / SubpopBench / BalancingGroups set-up scripts")),
    Layout(NAME, "wilds", "WILDS' celebA_v1.0/ bundle", ("celebA_v1.0",), _CSV_ATTR, (_CSV_SPLIT,)),
    Layout(NAME, "group_dro", "group_DRO's celebA/data/", ("celebA/data",), _CSV_ATTR, (_CSV_SPLIT,)),
    Layout(NAME, "official", "the published list_attr_celeba.txt + list_eval_partition.txt", (NAME, "."),
           Need("list_attr_celeba.txt", _TXT_ATTR), (Need("list_eval_partition.txt", _TXT_SPLIT),)),
    Layout(NAME, "official-tree", "the published Anno/, Eval/, Img/ folders", (NAME, "CelebA", "."),
           Need("Anno/list_attr_celeba.txt", _TXT_ATTR), (Need("Eval/list_eval_partition.txt", _TXT_SPLIT),)),
    Layout(NAME, "kaggle", "the Kaggle CelebA archive", (NAME, "."), _CSV_ATTR, (_CSV_SPLIT,)),
)
HOW_TO_GET = (
    "put the published CelebA lists (list_attr_celeba.txt, list_eval_partition.txt) and img_align_celeba.zip "
    f"unzipped into <data-dir>/{NAME}/, or unzip the Kaggle CelebA archive there, or point --data-dir at WILDS' "
    "celebA_v1.0/"
)


def _transform(size: int):
    def transform(img: Any) -> Any:
        from PIL import Image

        side = min(img.size)
        return center_crop(img, side, side).resize((size, size), Image.BILINEAR)

    return transform


def _image_dir(root: Path, folder: Path, first: str) -> Path:
    """The first candidate image folder holding ``first`` (else the first that exists, else the plain one)."""
    bases = [folder / IMAGE_FOLDER, folder / "Img" / IMAGE_FOLDER, root / NAME / IMAGE_FOLDER]
    candidates = [p for b in bases for p in (b / IMAGE_FOLDER, b)]
    return next(
        (p for p in candidates if (p / first).is_file()),
        next((p for p in candidates if p.is_dir()), folder / IMAGE_FOLDER),
    )


def _join(split_names: list[str], attr_names: list[str], attr_path: Path) -> np.ndarray:
    """Row of each partition-list file in the attribute list (the identity when both lists share their order)."""
    if split_names == attr_names:
        return np.arange(len(split_names))
    where = {n: i for i, n in enumerate(attr_names)}
    missing = next((n for n in split_names if n not in where), None)
    if missing is not None:
        raise DataError(f"{attr_path}: no attributes for {missing}, which the partition list names")
    return np.asarray([where[n] for n in split_names], dtype=np.int64)


def _read_lists(found_folder: Path, name: str) -> tuple[Path, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(attribute file, filenames, split, y, a) from the published .txt lists or the Kaggle/WILDS .csv lists."""
    if name in ("official", "official-tree"):
        sub = ("Anno/", "Eval/") if name == "official-tree" else ("", "")
        attr_path = found_folder / f"{sub[0]}list_attr_celeba.txt"
        split_path = found_folder / f"{sub[1]}list_eval_partition.txt"
        header, rows = read_whitespace_table(attr_path, _TXT_ATTR, count_line=True)
        for col in (TARGET, ATTRIBUTE):
            if col not in header:
                raise DataError(f"{attr_path}: no attribute '{col}' in its header line ({_TXT_ATTR})")
        attr_names = [r[0] for r in rows]
        y = minus_one_one([r[1 + header.index(TARGET)] for r in rows], TARGET, str(attr_path))
        a = minus_one_one([r[1 + header.index(ATTRIBUTE)] for r in rows], ATTRIBUTE, str(attr_path))
        _, parts = read_whitespace_table(split_path, _TXT_SPLIT, count_line=False)
        if len(parts[0]) != 2:
            raise DataError(f"{split_path}: rows must be '<image> <partition>', found {len(parts[0])} fields")
        names, split = [r[0] for r in parts], int_column([r[1] for r in parts], "partition", str(split_path))
    else:
        attr_path = found_folder / _CSV_ATTR.path
        split_path = found_folder / _CSV_SPLIT.path
        cols = read_csv_columns(attr_path, ("image_id", TARGET, ATTRIBUTE), _CSV_ATTR.producer)
        attr_names = cols["image_id"]
        y = minus_one_one(cols[TARGET], TARGET, str(attr_path))
        a = minus_one_one(cols[ATTRIBUTE], ATTRIBUTE, str(attr_path))
        parts_cols = read_csv_columns(split_path, ("image_id", "partition"), _CSV_SPLIT.producer)
        names = parts_cols["image_id"]
        split = int_column(parts_cols["partition"], "partition", str(split_path))
    order = _join(names, attr_names, attr_path)
    return split_path, names, split, y[order], a[order]


def locate(root: Path) -> Located:
    """Detects the layout under ``root`` and reads its rows (images are not checked here)."""
    found = detect(root, LAYOUTS, HOW_TO_GET)
    if found.layout.name == "standard":
        meta = read_metadata(found.marker, NUM_CLASSES)
        ids = [str(i + 1) for i in range(len(meta))]
    else:
        path, names, split, y, a = _read_lists(found.folder, found.layout.name)
        meta = check_metadata(path, names, split, y, a, NUM_CLASSES)
        ids = [str(i + 1) for i in range(len(names))]
    return Located(found, meta, ids, _image_dir(root, found.folder, meta.filename[0]))


def missing_inputs(loc: Located) -> list[str]:
    """The listed images that are not on disk."""
    return missing_files(loc.inputs, loc.meta.filename)


def open_celeba(root: str | Path, image_size: int = 224) -> ImageDataset:
    """Opens CelebA from any layout under ``root``; every listed image must exist. Rows load as (b, 3, S, S)."""
    root = check_root(root)
    size = check_image_size(image_size)
    loc = locate(root)
    meta = loc.meta
    check_files(loc.inputs, meta.filename, str(meta.path), f"unzip img_align_celeba.zip into {loc.found.folder}/")
    return ImageDataset(
        NAME, group_data(meta, NUM_CLASSES), root, meta.path, loc.inputs, meta.filename, _transform(size), size
    )
