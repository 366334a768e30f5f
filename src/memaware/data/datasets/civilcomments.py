"""CivilComments (Borkan et al. 2019; WILDS) as in the group-robustness literature: y = toxicity >= 0.5, a = the
mentioned identity among male, female, LGBTQ, christian, muslim, other_religions, black, white.

Layout: ``<root>/civilcomments/metadata_civilcomments_coarse.csv`` (or at ``<root>/``; the ``_fine`` file is
accepted too), whose ``filename`` is a row index into ``<root>/civilcomments/civilcomments_coarse.csv`` (one
column ``comment_text``, written by pandas with quoting, so comments may contain commas and newlines).

The coarse file is not one row per comment: *train* rows have a = 1 when no identity is mentioned and a = 0
otherwise, while *val/test* rows are repeated once per mentioned identity with a in 0..7 (comments mentioning no
identity are dropped there). Group ids therefore use A = 8 attribute values counted over all splits (a fixed A = 2
would make groups collide), a train group and a val/test group with the same a mean different things, and
validation/test averages are over duplicated rows: ``RealDataset.duplicated_splits`` says so. The fine file repeats
rows per identity in every split.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..groups import TEST, TRAIN, VAL, GroupData
from .common import RealDataset, check_root, group_data, index_column, read_metadata

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
        raise DataError(f"{source}: no such file (the comment texts the metadata's 'filename' indexes into)")
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a few comments exceed csv's default 128 KiB field limit
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if TEXT_COLUMN not in header:
                raise DataError(f"{source}: missing column '{TEXT_COLUMN}'; found {', '.join(header) or 'none'}")
            col = header.index(TEXT_COLUMN)
            return [r[col] if len(r) > col else "" for r in reader]
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not a UTF-8 text file ({e.reason} at byte {e.start})") from e
    except csv.Error as e:
        raise DataError(f"{source}: malformed CSV ({e})".splitlines()[0]) from e
    except OSError as e:
        raise DataError(f"{source}: cannot read ({e.strerror or e})") from e
    finally:
        csv.field_size_limit(limit)


def _find(root: Path, variants: tuple[str, ...]) -> tuple[Path, str]:
    tried = []
    for variant in variants:
        name = f"metadata_{NAME}_{variant}.csv"
        for path in (root / NAME / name, root / name):
            if path.is_file():
                return path, variant
        tried.append(name)
    raise DataError(
        f"no {' or '.join(tried)} in {root / NAME}/ or {root}/: put the community's metadata CSV (columns id, "
        f"filename, split, y, a; split 0 train, 1 val, 2 test) in one of them"
    )


def _open(root: str | Path, variants: tuple[str, ...]) -> TextDataset:
    root = check_root(root)
    path, variant = _find(root, variants)
    meta = read_metadata(path, NUM_CLASSES)
    text_path = root / NAME / f"{NAME}_{variant}.csv"
    texts = read_texts(text_path)
    index = index_column(meta, len(texts), str(text_path))
    notes = NOTES[variant] + (
        (f"read the {variant} metadata (no coarse file found)",) if variants[0] != variant else ()
    )
    return TextDataset(
        f"{NAME}" if variant == "coarse" else f"{NAME}-fine",
        group_data(meta, NUM_CLASSES),
        root,
        path,
        index,
        texts,
        notes,
        DUPLICATED[variant],
        text_path,
    )


def open_civilcomments(root: str | Path, image_size: int = 224) -> TextDataset:
    """Opens CivilComments, the coarse metadata if present, else the fine one (``image_size`` is ignored)."""
    del image_size
    return _open(root, ("coarse", "fine"))


def open_civilcomments_fine(root: str | Path, image_size: int = 224) -> TextDataset:
    """Opens CivilComments from its fine metadata (every split duplicated per identity)."""
    del image_size
    return _open(root, ("fine",))
