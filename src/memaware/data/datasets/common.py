"""What the real-dataset layouts share: finding and validating the community's metadata CSVs (columns
``id, filename, split, y, a``; split 0 train / 1 validation / 2 test), the ``RealDataset`` handle, and image
decoding with PIL + numpy (no torchvision).

A ``RealDataset``'s metadata is a ``GroupData`` whose ``x`` is the (n, 1) float32 *row index* into the dataset
(row i of the metadata CSV is x = i). float32 holds every integer below 2**24 exactly, so datasets are limited to
16,777,216 rows (the largest, CivilComments, has about 450,000). ``RealDataset.load(rows)`` turns row indices into
the backbone's raw input. Every bad input raises a one-line ``DataError`` naming the file, column and value.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from ...errors import ConfigError, DataError
from ...lazy import lazy_module
from ..groups import SPLIT_NAMES, TEST, TRAIN, VAL, GroupData
from .tables import int_column, read_csv_columns

torch = lazy_module("torch")

METADATA_COLUMNS = ("id", "filename", "split", "y", "a")
REQUIRED_COLUMNS = ("filename", "split", "y", "a")  # 'id' is carried by the standard files but never needed
MAX_ROWS = 2**24  # float32 represents every integer up to 2**24 exactly (the row-index column)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# the raw input of a backbone for a batch of rows: images (b, 3, S, S), texts, or token arrays (b, L) each
Batch: TypeAlias = "torch.Tensor | list[str] | dict[str, torch.Tensor]"  # a string: torch loads at first use


@dataclass(frozen=True)
class Metadata:
    """A parsed metadata CSV: ``filename`` (n,) strings and int64 ``split``, ``y``, ``a`` (n,) arrays."""

    path: Path
    filename: list[str]
    split: np.ndarray
    y: np.ndarray
    a: np.ndarray

    def __len__(self) -> int:
        return len(self.filename)


def check_root(root: str | os.PathLike) -> Path:
    """The --data-dir as a Path; a one-line error when it is not a directory."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist (point --data-dir at the folder holding the datasets)")
    return path


def find_metadata(root: Path, folder: str, filename: str) -> Path:
    """``<root>/<folder>/<filename>`` or ``<root>/<filename>`` (download scripts differ); error naming both."""
    candidates = [root / folder / filename, root / filename]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"no {filename} in {candidates[0].parent}/ or {candidates[1].parent}/: put the community's metadata CSV "
        f"(columns {', '.join(METADATA_COLUMNS)}; split 0 train, 1 val, 2 test) in one of them"
    )


def read_metadata(path: Path, num_classes: int) -> Metadata:
    """Reads and validates a standard metadata CSV (see ``check_metadata``). Extra columns (e.g. ``id``) are
    ignored."""
    source = str(path)
    cols = read_csv_columns(
        path, REQUIRED_COLUMNS, f"columns {', '.join(METADATA_COLUMNS)}, as the XRM / SubpopBench scripts write it"
    )
    split = int_column(cols["split"], "split", source)
    y = int_column(cols["y"], "y", source)
    a = int_column(cols["a"], "a", source)
    return check_metadata(path, cols["filename"], split, y, a, num_classes)


def check_metadata(
    path: Path, filename: list[str], split: np.ndarray, y: np.ndarray, a: np.ndarray, num_classes: int
) -> Metadata:
    """Validates per-row labels built from any layout: split codes, label range, a >= -1, every split non-empty,
    fewer than 2**24 rows. ``path`` is the file the labels came from (named in errors)."""
    source = str(path)
    if len(filename) >= MAX_ROWS:
        raise DataError(f"{source}: {len(filename)} rows; at most {MAX_ROWS - 1} are supported (float32 row index)")
    bad = ~np.isin(split, (TRAIN, VAL, TEST))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{source}: column 'split' must be 0 (train), 1 (val) or 2 (test), found {split[i]} in data row {i + 1}"
        )
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{source}: column 'y' must be in 0..{num_classes - 1}, found {y[i]} in data row {i + 1}")
    bad = a < -1
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{source}: column 'a' must be >= 0 (or -1 if unknown), found {a[i]} in data row {i + 1}")
    for s in (TRAIN, VAL, TEST):
        if not (split == s).any():
            raise DataError(f"{source}: split {s} ({SPLIT_NAMES[s]}) has no rows")
    return Metadata(path=path, filename=list(filename), split=split, y=y, a=a)


def index_column(meta: Metadata, num_items: int, what: str) -> np.ndarray:
    """The ``filename`` column read as integer row indices into ``what`` (which has ``num_items`` rows)."""
    source = str(meta.path)
    idx = int_column(meta.filename, "filename", source)
    bad = (idx < 0) | (idx >= num_items)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{source}: column 'filename' is a row index into {what} ({num_items} rows), found {idx[i]} "
            f"in data row {i + 1}"
        )
    return idx


def group_data(meta: Metadata, num_classes: int) -> GroupData:
    """The metadata as ``GroupData`` with x = (n, 1) float32 row index (A counted over all splits)."""
    x = np.arange(len(meta), dtype=np.float32)[:, None]
    return GroupData.from_arrays(x, meta.y, meta.split, meta.a, source=str(meta.path), num_classes=num_classes)


def missing_files(base: Path, names: Sequence[str]) -> list[str]:
    """The ``names`` with no file ``base/name``, listing each directory once (no stat per file)."""
    listings: dict[str, set[str]] = {}
    missing = []
    for name in names:
        parent, _, leaf = name.rpartition("/")
        if parent not in listings:
            try:
                listings[parent] = set(os.listdir(base / parent)) if parent else set(os.listdir(base))
            except (FileNotFoundError, NotADirectoryError):
                listings[parent] = set()
        if leaf not in listings[parent]:
            missing.append(name)
    return missing


def check_files(base: Path, names: Sequence[str], source: str, what: str) -> None:
    """Checks that every ``base/name`` exists; ``what`` says what provides the files (named in the error)."""
    if not base.is_dir():
        raise DataError(f"{source}: image folder {base} does not exist ({what})")
    missing = missing_files(base, names)
    if missing:
        raise DataError(
            f"{source}: {len(missing)} of {len(names)} listed images are missing under {base}, e.g. {missing[0]} "
            f"({what})"
        )


def as_rows(rows: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    """Row indices as a 1-D int64 numpy array."""
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    return np.asarray(rows, dtype=np.int64).reshape(-1)


class RealDataset:
    """A real dataset opened from its standard layout.

    ``data`` is its metadata as ``GroupData`` (x = (n, 1) float32 row index); ``load(rows)`` returns the backbone's
    raw input for those rows: images (b, 3, S, S) float32 (ImageNet-normalised), a list of b strings, or a dict of
    (b, L) int64 token tensors. ``duplicated_splits`` lists the splits whose rows repeat an example once per
    attribute value (CivilComments): averages over those splits are over duplicated rows. ``notes`` are one-line
    remarks for reports.
    """

    modality: str = ""

    def __init__(
        self,
        name: str,
        data: GroupData,
        root: Path,
        metadata_path: Path,
        notes: Sequence[str] = (),
        duplicated_splits: Sequence[int] = (),
    ):
        self.name, self.data, self.root, self.metadata_path = name, data, root, metadata_path
        self.notes = tuple(notes)
        self.duplicated_splits = tuple(duplicated_splits)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, modality={self.modality!r})"

    @property
    def has_duplicated_rows(self) -> bool:
        """Whether some split repeats examples (once per attribute value); see ``duplicated_splits``."""
        return bool(self.duplicated_splits)

    def load(self, rows: torch.Tensor | np.ndarray | Sequence[int]) -> Batch:
        """The backbone's raw input for ``rows`` (b,) row indices, in that order."""
        return self._load(as_rows(rows))

    def _load(self, rows: np.ndarray) -> Batch:
        raise NotImplementedError

    def split_sizes(self) -> dict[str, int]:
        """Rows per split, e.g. {'train': 4795, 'val': 1199, 'test': 5794}."""
        names = {TRAIN: "train", VAL: "val", TEST: "test"}
        return {names[s]: int((self.data.split == s).sum()) for s in (TRAIN, VAL, TEST)}


def center_crop(img: Any, width: int, height: int) -> Any:
    """PIL centre crop with torchvision's rounding (top = round((h - th) / 2))."""
    w, h = img.size
    left, top = int(round((w - width) / 2.0)), int(round((h - height) / 2.0))
    return img.crop((left, top, left + width, top + height))


NORMALIZATIONS = ("imagenet", "none")


def to_normalized_array(img: Any, normalize: str = "imagenet") -> np.ndarray:
    """PIL RGB image -> (3, H, W) float32 scaled to [0, 1], then (``imagenet``) normalised with the ImageNet mean
    and std, or (``none``) left in [0, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if normalize == "imagenet":
        arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class ImageDataset(RealDataset):
    """Images under ``image_dir``, one file per row, decoded with PIL and shaped by ``transform`` (PIL -> PIL of
    size S x S, or (H, W) when ``image_size`` is a pair); ``load`` returns (b, 3, S, S) float32, normalised as
    ``normalize`` says (``to_normalized_array``).

    Images are decoded once (``datasets.decoded``): the first ``load`` decodes every row to uint8 at the working
    resolution, and every later batch is gathered from that array (``load_uint8``) and normalised
    (``normalize_images``): the same float32 numbers as decoding the files again. ``configure_decoding`` chooses
    where the array lives (``decode_cache``: auto, memory, disk, off). ``transform_id`` names the transform in the
    disk cache's key (a different transform must give a different id).
    """

    modality = "image"

    def __init__(
        self,
        name: str,
        data: GroupData,
        root: Path,
        metadata_path: Path,
        image_dir: Path,
        files: Sequence[str],
        transform: Callable[[Any], Any],
        image_size: int | tuple[int, int],
        notes: Sequence[str] = (),
        workers: int | None = None,
        normalize: str = "imagenet",
        transform_id: str = "",
    ):
        super().__init__(name, data, root, metadata_path, notes)
        self.image_dir, self.files, self.transform, self.image_size = image_dir, list(files), transform, image_size
        self.normalize = normalize
        self.transform_id = transform_id or f"{name}:{image_size}:{'|'.join(self.notes)}"
        # JPEG decoding and resizing release the GIL: a few threads keep a GPU backbone fed
        self.workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        self.decode_cache, self.cache_budget, self.cache_folder, self.decode_progress = "auto", None, None, False
        self.decoded_images: Any = None  # a datasets.decoded.DecodedImages once built
        self.decode_lock = threading.Lock()  # a loader thread and the training thread may ask at once

    @property
    def shape(self) -> tuple[int, int, int]:
        """(3, H, W) of one image as the backbone gets it."""
        side = self.image_size
        return (3, *(side if isinstance(side, tuple) else (side, side)))

    def configure_decoding(
        self, mode: str = "auto", budget: int | None = None, folder: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> None:  # fmt: skip
        """Where decoded images live (``datasets.decoded.DECODE_CACHES``), the in-memory budget in bytes, the
        cache folder (default ``~/.cache/memaware/decoded``, or ``$MEMAWARE_CACHE_DIR/decoded``) and whether
        decoding shows a progress bar. Drops an array already decoded under other settings."""
        from .decoded import check_decode_cache

        self.decode_cache = check_decode_cache(mode)
        self.cache_budget = budget
        self.cache_folder = Path(folder).expanduser() if folder is not None else None
        self.decode_progress = progress
        self.decoded_images = None

    def decode_uint8(self, row: int) -> np.ndarray:
        """Row ``row``'s image after the transform, as (3, H, W) uint8; a one-line ``DataError`` if unreadable."""
        from PIL import Image, UnidentifiedImageError

        path = self.image_dir / self.files[row]
        try:
            with Image.open(path) as img:
                out = self.transform(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path}: cannot read image ({type(e).__name__})") from e
        arr = np.asarray(out, dtype=np.uint8)
        if arr.shape != self.shape[1:] + (3,):
            got, want = f"{arr.shape[1]}x{arr.shape[0]}", f"{self.shape[2]}x{self.shape[1]}"
            raise DataError(f"{path}: decoded to {got}, expected {want}")
        # contiguous (3, H, W): a batch stacked from channels-last views would be channels-last itself, and
        # convolutions then take other kernels (equal values, different float rounding)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def decoded(self) -> Any:
        """The whole dataset decoded once (``datasets.decoded.DecodedImages``), built at the first call."""
        with self.decode_lock:
            if self.decoded_images is None:
                self.decoded_images = self.decode_all()
            return self.decoded_images

    def decode_all(self) -> Any:
        from ..benchmarks.common import default_cache_dir
        from .decoded import build_decoded, cache_key

        folder = self.cache_folder or default_cache_dir() / "decoded"
        bar = None
        if self.decode_progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.files), desc=f"decoding {self.name} images", unit="img", leave=False)
        try:
            return build_decoded(
                len(self.files), self.shape, self.decode_uint8,
                lambda: cache_key(self.image_dir, self.files, self.transform_id), self.decode_cache,
                self.cache_budget, folder, self.workers, None if bar is None else bar.update,
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()

    def load_uint8(self, rows: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """(b,) rows -> (b, 3, H, W) uint8 images: from the decoded array, or (``decode_cache='off'``) decoded from
        their files now, on ``workers`` threads."""
        rows = as_rows(rows)
        if self.decode_cache != "off":
            return self.decoded().gather(rows)
        if len(rows) > 1 and self.workers > 1:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(rows))) as pool:
                arrays = list(pool.map(self.decode_uint8, rows.tolist()))
        else:
            arrays = [self.decode_uint8(r) for r in rows.tolist()]
        return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, *self.shape, dtype=torch.uint8)

    def _load(self, rows: np.ndarray) -> torch.Tensor:
        from .decoded import normalize_images

        return normalize_images(self.load_uint8(rows), self.normalize)


def check_image_size(image_size: int) -> int:
    """Validates the side S of the square images a dataset yields."""
    if image_size < 8:
        raise ConfigError(f"image size must be >= 8 pixels, got {image_size}")
    return int(image_size)
