"""CivilComments (Borkan et al. 2019; WILDS) as in the group-robustness literature: y = toxicity >= 0.5, a = the
mentioned identity among male, female, LGBTQ, christian, muslim, other_religions, black, white.

Layouts (tried in this order, under ``--data-dir`` or with it pointing at the folder):

- ``standard``: ``civilcomments/metadata_civilcomments_coarse.csv`` (or at ``<root>/``; the ``_fine`` file when no
  coarse one is there) whose ``filename`` is a row index into ``civilcomments_coarse.csv`` beside it (one column
  ``comment_text``, written by pandas with quoting, so comments may contain commas and newlines);
- ``wilds``: ``civilcomments_v1.0/all_data_with_identities.csv`` (the WILDS bundle: an unnamed index column,
  ``comment_text``, ``split`` as train/val/test, ``toxicity`` and the identity columns as scores in [0, 1]);
- ``release``: the same file in ``civilcomments/`` (where XRM's download extracts that bundle).

From the release file, rows are built exactly as XRM's set-up script builds the standard files: scores are
thresholded at 0.5 (an empty score counts as 0); the *coarse* rows are first every train comment once, a = 1 when
it mentions no identity and 0 otherwise, then for each split in sorted name order (test, val) and each identity in
the order above, the comments of that split mentioning it, a = the identity's index; the *fine* rows do the same for
every split (test, train, val), train included. The coarse file is therefore not one row per comment: val/test
comments repeat once per mentioned identity (and those mentioning none are dropped), so group ids use A = 8
attribute values counted over all splits (a fixed A = 2 would make groups collide), a train group and a val/test
group with the same a mean different things, and validation/test averages are over duplicated rows:
``RealDataset.duplicated_splits`` says so.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..groups import TEST, TRAIN, VAL, GroupData
from .common import Metadata, RealDataset, check_metadata, check_root, group_data, index_column, read_metadata
from .layouts import Layout, Located, Need, detect
from .tables import read_csv_columns, reading_text, threshold_column

NAME = "civilcomments"
NUM_CLASSES = 2
IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
TEXT_COLUMN = "comment_text"
NOTES = {
    "coarse": (
        "validation/test rows are duplicated once per mentioned identity (a in 0..7): their averages are over "
        "duplicated rows; train rows have a = 1 when no identity is mentioned, a = 0 otherwise",
    ),
    "fine": ("every split repeats a comment once per mentioned identity: averages are over duplicated rows",),
}
DUPLICATED = {"coarse": (VAL, TEST), "fine": (TRAIN, VAL, TEST)}


class TextDataset(RealDataset):
    """Raw text, one string per row: ``load`` returns a list of b strings."""

    modality = "text"

    def __init__(
        self,
        name: str,
        data: GroupData,
        root: Path,
        metadata_path: Path,
        index: np.ndarray,
        texts: list[str],
        notes: tuple[str, ...],
        duplicated_splits: tuple[int, ...],
        text_path: Path,
    ):
        super().__init__(name, data, root, metadata_path, notes, duplicated_splits)
        self.index, self.texts, self.text_path = index, texts, text_path

    def _load(self, rows: np.ndarray) -> list[str]:
        return [self.texts[i] for i in self.index[rows].tolist()]


def read_texts(path: Path) -> list[str]:
    """The ``comment_text`` column of a pandas-written CSV (header row first), as a list of strings."""
    source = str(path)
    if not path.is_file():
        raise DataError(
            f"{source}: no such file (the comment texts the metadata's 'filename' indexes into, written with the "
            f"metadata by the XRM / SubpopBench set-up scripts)"
        )
    with reading_text(path), open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if TEXT_COLUMN not in header:
            raise DataError(f"{source}: missing column '{TEXT_COLUMN}'; found {', '.join(header) or 'none'}")
        col = header.index(TEXT_COLUMN)
        return [r[col] if len(r) > col else "" for r in reader]


RELEASE_FILE = "all_data_with_identities.csv"
SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": TEST}
_RELEASE = Need(RELEASE_FILE, "the CivilComments release of WILDS (civilcomments_v1.0)")
_SCRIPTS = "written by the XRM / SubpopBench / BalancingGroups set-up scripts"
LAYOUTS = {
    "coarse": Layout(NAME, "standard", "metadata_civilcomments_coarse.csv of the set-up scripts", (NAME, "."),
                     Need(f"metadata_{NAME}_coarse.csv", _SCRIPTS)),
    "fine": Layout(NAME, "standard-fine", "metadata_civilcomments_fine.csv of the set-up scripts", (NAME, "."),
                   Need(f"metadata_{NAME}_fine.csv", _SCRIPTS)),
    "wilds": Layout(NAME, "wilds", "WILDS' civilcomments_v1.0/ bundle", ("civilcomments_v1.0",), _RELEASE),
    "release": Layout(NAME, "release", f"{NAME}/{RELEASE_FILE} (the WILDS release where XRM's download puts it)",
                      (NAME, "."), _RELEASE),
}
HOW_TO_GET = (
    f"extract WILDS' CivilComments release (civilcomments_v1.0, holding {RELEASE_FILE}) into <data-dir>/{NAME}/ "
    "or point --data-dir at it"
)


def _ids_of(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask)


def release_rows(split: np.ndarray, ids: np.ndarray, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(comment index, a) per row of the coarse or fine file, built from per-comment ``split`` (n,) codes and
    ``ids`` (n, 8) 0/1 identity mentions, in the set-up script's order (see the module docstring)."""
    parts_i, parts_a = [], []
    if variant == "coarse":
        train = _ids_of(split == TRAIN)
        parts_i.append(train)
        parts_a.append((ids[train].sum(axis=1) == 0).astype(np.int64))
    for name in sorted(SPLIT_CODES):  # pandas' groupby order: test, train, val
        if variant == "coarse" and name == "train":
            continue
        in_split = split == SPLIT_CODES[name]
        for k in range(len(IDENTITIES)):
            rows = _ids_of(in_split & (ids[:, k] == 1))
            parts_i.append(rows)
            parts_a.append(np.full(len(rows), k, dtype=np.int64))
    return np.concatenate(parts_i), np.concatenate(parts_a)


def read_release(path: Path, variant: str) -> tuple[Metadata, list[str], np.ndarray]:
    """The release file as the coarse or fine rows: (metadata with filename = row number, the texts of all
    comments, the comment index of each row)."""
    source = str(path)
    cols = read_csv_columns(
        path, ("comment_text", "split", "toxicity", *IDENTITIES), _RELEASE.producer, verbatim=("comment_text",)
    )
    unknown = next((i for i, v in enumerate(cols["split"]) if v not in SPLIT_CODES), None)
    if unknown is not None:
        raise DataError(
            f"{source}: column 'split' must be train, val or test, found {cols['split'][unknown]!r} in data row "
            f"{unknown + 1}"
        )
    split = np.asarray([SPLIT_CODES[v] for v in cols["split"]], dtype=np.int64)
    y_all = threshold_column(cols["toxicity"], "toxicity", source)
    ids = np.stack([threshold_column(cols[c], c, source) for c in IDENTITIES], axis=1)
    index, a = release_rows(split, ids, variant)
    filename = [str(i) for i in range(len(index))]
    meta = check_metadata(path, filename, split[index], y_all[index], a, NUM_CLASSES)
    return meta, cols["comment_text"], index


def locate(root: Path, variants: tuple[str, ...] = ("coarse", "fine")) -> Located:
    """Detects the layout under ``root`` and reads its rows; ``variants[0]`` is what a release file becomes."""
    layouts = tuple(LAYOUTS[v] for v in variants) + (LAYOUTS["wilds"], LAYOUTS["release"])
    found = detect(root, layouts, HOW_TO_GET)
    if found.layout in (LAYOUTS["wilds"], LAYOUTS["release"]):
        variant = variants[0]
        meta, texts, index = read_release(found.marker, variant)
        notes = NOTES[variant] + (f"{variant} rows built from {RELEASE_FILE} as XRM's set-up script builds them",)
        return Located(found, meta, list(meta.filename), found.marker, notes, (texts, index))
    variant = "coarse" if found.layout is LAYOUTS["coarse"] else "fine"
    meta = read_metadata(found.marker, NUM_CLASSES)
    texts = next(
        (p for p in (found.folder / f"{NAME}_{variant}.csv", root / NAME / f"{NAME}_{variant}.csv") if p.is_file()),
        found.folder / f"{NAME}_{variant}.csv",
    )
    fell_back = (f"read the {variant} metadata (no coarse file found)",) if variants[0] != variant else ()
    notes = NOTES[variant] + fell_back
    return Located(found, meta, list(meta.filename), texts, notes)


def variant_of(loc: Located, variants: tuple[str, ...] = ("coarse", "fine")) -> str:
    """'coarse' or 'fine': what the located rows are."""
    if loc.layout is LAYOUTS["fine"]:
        return "fine"
    return "coarse" if loc.layout is LAYOUTS["coarse"] else variants[0]


def missing_inputs(loc: Located) -> list[str]:
    """The comment texts the rows need that are not on disk (the text file, when it is absent)."""
    return [] if loc.inputs.is_file() else [loc.inputs.name]


def _open(root: str | Path, variants: tuple[str, ...]) -> TextDataset:
    root = check_root(root)
    loc = locate(root, variants)
    variant = variant_of(loc, variants)
    meta = loc.meta
    if loc.payload is not None:
        texts, index = loc.payload
    else:
        texts = read_texts(loc.inputs)
        index = index_column(meta, len(texts), str(loc.inputs))
    return TextDataset(
        NAME if variant == "coarse" else f"{NAME}-fine",
        group_data(meta, NUM_CLASSES),
        root,
        meta.path,
        index,
        texts,
        loc.notes,
        DUPLICATED[variant],
        loc.inputs,
    )


def open_civilcomments(root: str | Path, image_size: int = 224) -> TextDataset:
    """Opens CivilComments, the coarse rows if present (or built from the release), else the fine ones
    (``image_size`` is ignored)."""
    del image_size
    return _open(root, ("coarse", "fine"))


def open_civilcomments_fine(root: str | Path, image_size: int = 224) -> TextDataset:
    """Opens CivilComments' fine rows (every split duplicated per identity)."""
    del image_size
    return _open(root, ("fine",))
