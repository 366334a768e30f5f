"""``load_table``: a user's metadata table (``table.read_table``) or ImageFolder tree opened as a ``RealDataset``.

Images are checked before any training: every file exists and PIL reads its header (its format and size; a file
whose body is damaged is reported at its first decode). Their size is chosen, never guessed silently:
- ``image_size=None`` (the default): the images' own size, which must then be the same for all of them;
- ``image_size=S`` with ``resize='stretch'``: every image resized to S x S (bilinear; the aspect ratio is not kept),
  or ``resize='crop'``: the shorter side resized to S, then the centre S x S crop (torchvision's Resize + CenterCrop).
Pixels are scaled to [0, 1]; ``normalize='imagenet'`` also subtracts ImageNet's mean and divides by its std (what
ImageNet-pretrained backbones expect). ``describe()`` states these choices for the run's record.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from ..groups import GroupData
from .common import NORMALIZATIONS, ImageDataset, RealDataset, center_crop, check_image_size
from .table import SPLIT_CODES, Table, check_labels, encode, read_table

RESIZES = ("stretch", "crop")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_table_path(path: str | os.PathLike) -> bool:
    """Whether ``--data PATH`` names a metadata table (a .csv file) or an ImageFolder tree (a directory)."""
    p = Path(path).expanduser()
    return p.suffix.lower() == ".csv" or p.is_dir()


def table_folders(root: str | os.PathLike) -> Table:
    """torchvision's ImageFolder convention with one folder per split: ``ROOT/train/CLASS/*.png``, ``ROOT/val/``
    (or ``valid``, ``validation``), ``ROOT/test/``; class names sorted; no attribute (a = -1)."""
    root = Path(root).expanduser()
    source = str(root)
    inputs: list[str] = []
    labels: list[str] = []
    splits: list[int] = []
    found = {}
    for entry in sorted(os.listdir(root)):
        code = SPLIT_CODES.get(entry.lower())
        if code is None or not (root / entry).is_dir() or entry.isdigit():
            continue
        if code in found:
            raise DataError(f"{source}: both {found[code]}/ and {entry}/ hold the same split; keep one")
        found[code] = entry
        for cls in sorted(os.listdir(root / entry)):
            if not (root / entry / cls).is_dir():
                continue
            for name in sorted(os.listdir(root / entry / cls)):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    inputs.append(f"{entry}/{cls}/{name}")
                    labels.append(cls)
                    splits.append(code)
    missing = [s for s in ("train", "val", "test") if SPLIT_CODES[s] not in found]
    if missing:
        raise DataError(
            f"{source}: no {missing[0]}/ folder of class folders (ImageFolder layout: train/CLASS/*.png, val/, test/; "
            "or give a metadata CSV)"
        )
    if not inputs:
        raise DataError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)}) under its split/class folders")
    y, names = encode(labels, "y", source)
    split = np.array(splits, dtype=np.int8)
    check_labels(y, split, names, source)
    return Table(root, "image", inputs, y, split, np.full(len(y), -1, dtype=np.int64), names, None, root)


def read_headers(base: Path, files: list[str], source: str) -> list[tuple[int, int]]:
    """(width, height) of every image, from its header; one-line errors for a missing or unreadable file."""
    from PIL import Image, UnidentifiedImageError

    def one(i: int) -> tuple[int, int]:
        path = base / files[i]
        try:
            with Image.open(path) as img:
                return img.size
        except FileNotFoundError:
            raise DataError(f"{source}: data row {i + 1}, column 'filename': no such file {path}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(
                f"{source}: data row {i + 1}, column 'filename': {path} is not an image PIL can read "
                f"({type(e).__name__})"
            ) from None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, range(len(files)), chunksize=256))


def image_transform(image_size: int | None, resize: str, sizes: list[tuple[int, int]], files: list[str], source: str):
    """(PIL -> PIL transform, the (H, W) or S the dataset yields, a note saying what was chosen)."""
    if image_size is None:
        counts = Counter(sizes)
        if len(counts) > 1:
            (s1, _), (s2, _) = counts.most_common(2)
            f1, f2 = files[sizes.index(s1)], files[sizes.index(s2)]
            raise DataError(
                f"{source}: images differ in size ({f1} is {s1[0]}x{s1[1]}, {f2} is {s2[0]}x{s2[1]}): pass "
                "--image-size S (and --resize stretch|crop) to bring them all to S x S"
            )
        w, h = sizes[0]
        return (lambda img: img), (h if w == h else (h, w)), f"images used at their own size {w}x{h} (no resize)"
    side = check_image_size(image_size)
    if resize not in RESIZES:
        raise ConfigError(f"--resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    if resize == "stretch":
        from PIL import Image

        note = f"images resized to {side}x{side} (stretch: bilinear, aspect ratio not kept)"
        return (lambda img: img if img.size == (side, side) else img.resize((side, side), Image.BILINEAR)), side, note

    def crop(img: Any) -> Any:
        from PIL import Image

        w, h = img.size
        scale = side / min(w, h)
        img = img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
        return center_crop(img, side, side)

    return crop, side, f"images resized to {side} px on the shorter side, then centre-cropped to {side}x{side}"


class TableImageDataset(ImageDataset):
    """A user's images listed by a table; ``label_names`` / ``attr_names`` give the classes' and attribute values'
    names (index = code)."""

    def __init__(
        self, table: Table, data: GroupData, image_root: Path, transform, size, notes, normalize: str,
        transform_id: str = "",
    ):  # fmt: skip
        super().__init__(
            "table", data, table.path.parent, table.path, image_root, table.inputs, transform, size, notes,
            normalize=normalize, transform_id=transform_id,
        )  # fmt: skip
        self.table = table
        self.label_names, self.attr_names = table.label_names, table.attr_names

    def describe(self) -> dict[str, Any]:
        return describe(self)


class TableTextDataset(RealDataset):
    """A user's texts from a table's ``text`` column; ``load(rows)`` -> a list of b strings."""

    modality = "text"

    def __init__(self, table: Table, data: GroupData, notes):
        super().__init__("table", data, table.path.parent, table.path, notes)
        self.table, self.texts = table, table.inputs
        self.label_names, self.attr_names = table.label_names, table.attr_names
        self.normalize = None

    def _load(self, rows: np.ndarray) -> list[str]:
        return [self.texts[r] for r in rows.tolist()]

    def describe(self) -> dict[str, Any]:
        return describe(self)


def describe(ds: Any) -> dict[str, Any]:
    """The table's facts for a run record: source, modality, names of the labels and attribute values, the image
    size, resize and normalisation chosen, and the notes."""
    out = {
        "table": str(ds.table.path),
        "modality": ds.modality,
        "label_names": list(ds.label_names),
        "attr_names": list(ds.attr_names) if ds.attr_names else None,
        "notes": list(ds.notes),
    }
    if ds.modality == "image":
        out.update(image_root=str(ds.image_dir), image_size=ds.image_size, normalize=ds.normalize)
    return out


def load_table(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    image_size: int | None = None,
    resize: str = "stretch",
    normalize: str | None = None,
) -> RealDataset:
    """Opens a metadata CSV (``table`` module) or an ImageFolder tree as a ``RealDataset``: ``.data`` is its
    ``GroupData`` (x = (n, 1) float32 row index; y, a coded as in ``label_names`` / ``attr_names``), ``.load(rows)``
    the raw batch (images (b, 3, H, W) float32, or a list of strings). ``image_root``: the folder image paths are
    relative to (default: the CSV's folder); ``image_size``, ``resize``: see the module docstring; ``normalize``:
    'none' (default: pixels in [0, 1]) or 'imagenet'. All checks run here, before any training."""
    path = Path(path).expanduser()
    table = table_folders(path) if path.is_dir() else read_table(path)
    source = str(path)
    x = np.arange(len(table.y), dtype=np.float32)[:, None]
    data = GroupData.from_arrays(x, table.y, table.split, table.a, source=source, num_classes=len(table.label_names))
    labels = ", ".join(f"{k}={n}" for k, n in enumerate(table.label_names))
    notes = [f"labels {labels}"]
    if table.attr_names:
        notes.append("attribute " + ", ".join(f"{k}={n}" for k, n in enumerate(table.attr_names)))
    if (table.a < 0).any():
        notes.append(f"attribute unknown for {int((table.a < 0).sum())} of {len(table.a)} rows")
    if table.modality == "text":
        if image_root is not None or image_size is not None:
            raise ConfigError(f"{source}: --image-root and --image-size apply to image tables; this one holds text")
        return TableTextDataset(table, data, notes)
    norm = normalize or "none"
    if norm not in NORMALIZATIONS:
        raise ConfigError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got {norm!r}")
    base = Path(image_root).expanduser() if image_root is not None else table.base
    if not base.is_dir():
        raise DataError(f"--image-root {base}: no such folder")
    sizes = read_headers(base, table.inputs, source)
    transform, size, note = image_transform(image_size, resize, sizes, table.inputs, source)
    notes.append(note)
    notes.append("pixels in [0, 1], ImageNet mean/std normalisation" if norm == "imagenet" else
                 "pixels in [0, 1], no normalisation")  # fmt: skip
    return TableImageDataset(table, data, base, transform, size, notes, norm, transform_id=f"table:{note}")


def group_label(key: str, label_names: list[str], attr_names: list[str] | None) -> str:
    """'ring / green' for 'y=1,a=0' (a table's names); 'ring' for a class whose attribute is unknown."""
    y_text, _, a_text = key.partition(",")
    y = int(y_text.split("=")[1].split()[0])
    if not a_text.startswith("a="):
        return label_names[y]
    a = int(a_text[2:])
    return f"{label_names[y]} / {attr_names[a] if attr_names and a < len(attr_names) else a}"


def inspect_table(path: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """``memaware datasets --data PATH``: the table opened (all of ``load_table``'s checks; its ``DataError`` when
    one fails) and reported as an inventory entry: rows and groups per split, with the table's names."""
    from ..groups import group_name

    ds = load_table(path, **options)
    data, splits = ds.data, ("train", "val", "test")
    groups: dict[str, dict[str, int]] = {}
    for k, split in enumerate(splits):
        rows = data.split == k
        ids = data.group[rows]
        counts = {group_name(int(g), data.num_attrs): int((ids == g).sum()) for g in ids.unique().tolist() if g >= 0}
        unknown = int((ids < 0).sum())
        if unknown:  # no attribute: count per class
            for c in data.y[rows][ids < 0].unique().tolist():
                counts[f"y={c} (a unknown)"] = int(((data.y[rows] == c) & (ids < 0)).sum())
        groups[split] = dict(sorted(counts.items()))
    names = {s: {key: group_label(key, ds.label_names, ds.attr_names) for key in groups[s]} for s in splits}
    return {
        "dataset": "table", "status": "ok", "layout": "table" if Path(path).is_file() else "imagefolder",
        "layout_title": "your own metadata table" if Path(path).is_file() else "your own ImageFolder tree",
        "folder": str(Path(path).expanduser().parent if Path(path).is_file() else path), "metadata": str(path),
        "inputs": str(getattr(ds, "image_dir", path)),
        "rows": {s: int((data.split == k).sum()) for k, s in enumerate(splits)},
        "groups": groups, "group_names": names, "missing_inputs": {"count": 0, "examples": []},
        "notes": list(ds.notes), "label_names": ds.label_names, "attr_names": ds.attr_names,
    }  # fmt: skip


__all__ = ["inspect_table", "load_table", "is_table_path", "table_folders", "TableImageDataset", "TableTextDataset",
           "RESIZES"]  # fmt: skip
