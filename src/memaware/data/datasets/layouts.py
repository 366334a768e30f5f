"""Which download layout a ``--data-dir`` holds: each dataset module lists its layouts (a marker file that says
"this layout", the other files it needs and what produces each) and ``detect`` finds the first one present.

A layout's folder is given relative to the data root (``cub/data/waterbird_complete95_forest2water2``); the
``--data-dir`` may be that root, the dataset folder itself, or any folder in between (``~/dro/cub``): a folder path
is also tried after dropping the leading parts the data-dir's own name already matches. A marker found with a needed
file missing is a *partial* layout: a one-line ``DataError`` naming the missing file and what produces it. No marker
anywhere raises ``DatasetNotFound`` (also a ``DataError``), naming what was looked for and how to get it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError
from .common import Metadata


class DatasetNotFound(DataError):
    """No layout of the dataset under the data directory (nothing partial either)."""


@dataclass(frozen=True)
class Need:
    """A file (or folder) a layout needs, relative to its dataset folder, and what produces it."""

    path: str
    producer: str


@dataclass(frozen=True)
class Layout:
    """One way a dataset lies on disk. ``folders``: where its dataset folder may be under the data root ("." = the
    root itself); ``marker``: the file whose presence identifies the layout; ``needs``: further required files."""

    dataset: str
    name: str
    title: str
    folders: tuple[str, ...]
    marker: Need
    needs: tuple[Need, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Found:
    """A layout detected under ``root``, with its dataset ``folder``."""

    layout: Layout
    root: Path
    folder: Path

    @property
    def marker(self) -> Path:
        return self.folder / self.layout.marker.path


@dataclass
class Located:
    """A detected layout read into the standard per-row labels: ``meta`` (filename, split, y, a per row, exactly
    as the community's metadata scripts would write them), ``ids`` (their ``id`` column), ``inputs`` (the image
    folder, text file or token-array file the rows point into) and one-line ``notes``."""

    found: Found
    meta: Metadata
    ids: list[str]
    inputs: Path
    notes: tuple[str, ...] = ()
    payload: Any = None  # what a reader already loaded and its opener reuses (e.g. CivilComments' texts)

    @property
    def layout(self) -> Layout:
        return self.found.layout


def folder_candidates(root: Path, rel: str) -> list[Path]:
    """``root/rel``, then, when the last k parts of ``root`` equal the first k of ``rel``, ``root/<rest of rel>``."""
    if rel == ".":
        return [root]
    parts = Path(rel).parts
    out = [root / rel]
    root_parts = root.resolve().parts
    for k in range(1, len(parts) + 1):
        if tuple(root_parts[-k:]) == tuple(parts[:k]):
            rest = parts[k:]
            out.append(root.joinpath(*rest) if rest else root)
    return out


def detect(root: Path, layouts: tuple[Layout, ...], how_to_get: str) -> Found:
    """The first layout whose marker exists (in ``layouts`` order); its needs must all exist."""
    for layout in layouts:
        for rel in layout.folders:
            for folder in folder_candidates(root, rel):
                if (folder / layout.marker.path).is_file():
                    found = Found(layout, root, folder)
                    check_needs(found)
                    return found
    dataset = layouts[0].dataset
    looked = sorted({str(Path(rel) / lay.marker.path) for lay in layouts for rel in lay.folders})
    raise DatasetNotFound(f"no {dataset} under {root}: looked for {', '.join(looked)}; {how_to_get}")


def check_needs(found: Found) -> None:
    """A one-line error naming the first needed file that is missing and what produces it."""
    for need in found.layout.needs:
        path = found.folder / need.path
        if not path.exists():
            raise DataError(
                f"{path}: not found, but {found.marker} is there ({found.layout.title}); {need.producer}"
            )


__all__ = ["Layout", "Need", "Found", "Located", "DatasetNotFound", "detect", "check_needs", "folder_candidates"]
