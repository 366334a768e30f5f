"""Tiny fixture trees in the exact layouts of the community's download scripts (a few dozen rows each).

Each ``make_*`` writes under ``root`` and returns a dict with what a test needs to check (rows, expected groups).
Images are small JPG/PNG files made with PIL; the MultiNLI caches are pickled with ``torch.save`` of objects of a
class registered, while saving only, as ``utils_glue.InputFeatures`` (the class the real release pickles).
"""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SPLITS = (0, 1, 2)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _labels(n_per_split: int, seed: int, num_classes: int = 2, num_attrs: int = 2) -> list[tuple[int, int, int]]:
    """(split, y, a) triples covering every (y, a) pair in every split."""
    rng = np.random.default_rng(seed)
    out = []
    for s in SPLITS:
        for i in range(n_per_split):
            y = i % num_classes
            a = (i // num_classes) % num_attrs if i < num_classes * num_attrs else int(rng.integers(num_attrs))
            out.append((s, y, a))
    return out


def _image(path: Path, size: tuple[int, int], y: int, a: int, rng: np.random.Generator) -> None:
    """A small image whose colour carries y (red) and a (blue) plus noise."""
    w, h = size
    arr = rng.integers(0, 60, size=(h, w, 3))
    arr[..., 0] += 150 * y
    arr[..., 2] += 150 * a
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path)


def make_waterbirds(root: Path, n_per_split: int = 8, metadata_at_root: bool = False) -> dict:
    """``waterbirds/metadata_waterbirds.csv`` (or at root) + JPGs in species subfolders of the image folder."""
    rng = np.random.default_rng(0)
    base = root / "waterbirds" / "waterbird_complete95_forest2water2"
    rows = []
    for i, (s, y, a) in enumerate(_labels(n_per_split, 0)):
        name = f"{1 + i % 3:03d}.Species_{i % 3}/Bird_{i:04d}.jpg"
        _image(base / name, (28, 24), y, a, rng)
        rows.append([i, name, s, y, a])
    meta = root / "metadata_waterbirds.csv" if metadata_at_root else root / "waterbirds" / "metadata_waterbirds.csv"
    _write_csv(meta, ["id", "filename", "split", "y", "a"], rows)
    return {"metadata": meta, "images": base, "rows": rows, "num_attrs": 2, "num_classes": 2}


def make_celeba(root: Path, n_per_split: int = 8, nested: bool = False, metadata_at_root: bool = True) -> dict:
    """``metadata_celeba.csv`` (root by default, as BalancingGroups writes it) + PNGs in ``img_align_celeba/``
    (twice nested when ``nested``, like a Kaggle unzip). Images are 18 x 22, the originals' aspect ratio."""
    rng = np.random.default_rng(1)
    base = root / "celeba" / "img_align_celeba"
    if nested:
        base = base / "img_align_celeba"
    rows = []
    for i, (s, y, a) in enumerate(_labels(n_per_split, 1)):
        name = f"{i + 1:06d}.png"
        _image(base / name, (18, 22), y, a, rng)
        rows.append([i + 1, name, s, y, a])
    meta = root / "metadata_celeba.csv" if metadata_at_root else root / "celeba" / "metadata_celeba.csv"
    _write_csv(meta, ["id", "filename", "split", "y", "a"], rows)
    return {"metadata": meta, "images": base, "rows": rows, "num_attrs": 2, "num_classes": 2}


def glue_module() -> types.ModuleType:
    mod = types.ModuleType("utils_glue")

    class InputFeatures:
        def __init__(self, input_ids, input_mask, segment_ids, label_id):
            self.input_ids, self.input_mask, self.segment_ids, self.label_id = (
                input_ids,
                input_mask,
                segment_ids,
                label_id,
            )

    InputFeatures.__module__ = "utils_glue"
    InputFeatures.__qualname__ = "InputFeatures"
    mod.InputFeatures = InputFeatures
    return mod


GLUE_FILES = (
    "cached_train_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli-mm",
)


def make_multinli_caches(root: Path, labels: list[list[int]], length: int = 16, seed: int = 2) -> list[Path]:
    """The three pickled GLUE caches, one list of ``utils_glue.InputFeatures`` per file; ``labels[k]`` are the
    labels of file k. The first file uses torch's legacy (pre-1.6) format, like the 2019 release."""
    rng = np.random.default_rng(seed)
    mod = glue_module()
    glue = root / "multinli" / "glue_data" / "MNLI"
    glue.mkdir(parents=True, exist_ok=True)
    paths = []
    sys.modules["utils_glue"] = mod  # pickle looks the class up by name while saving; removed right after
    try:
        for k, (fname, labs) in enumerate(zip(GLUE_FILES, labels, strict=True)):
            feats = []
            for lab in labs:
                used = int(rng.integers(4, length))
                ids = [101] + rng.integers(1000, 30000, size=used - 2).tolist() + [102] + [0] * (length - used)
                mask = [1] * used + [0] * (length - used)
                seg = [0] * (used // 2) + [1] * (used - used // 2) + [0] * (length - used)
                feats.append(mod.InputFeatures(ids, mask, seg, lab))
            path = glue / fname
            torch.save(feats, path, _use_new_zipfile_serialization=(k != 0))
            paths.append(path)
    finally:
        del sys.modules["utils_glue"]
    return paths


def make_multinli(root: Path, n_per_split: int = 9, convert: bool = True, metadata_at_root: bool = False) -> dict:
    """``multinli/metadata_multinli.csv`` (SubpopBench's place; BalancingGroups puts it at root) whose filename
    indexes the concatenated caches (train file = split 0, dev = split 1, dev-mm = split 2); optionally converted."""
    labels = _labels(n_per_split, 2, num_classes=3, num_attrs=2)
    per_file = [[y for s, y, _ in labels if s == k] for k in SPLITS]
    make_multinli_caches(root, per_file)
    rows = [[i, i, s, y, a] for i, (s, y, a) in enumerate(labels)]
    meta = root / "metadata_multinli.csv" if metadata_at_root else root / "multinli" / "metadata_multinli.csv"
    _write_csv(meta, ["id", "filename", "split", "y", "a"], rows)
    if convert:
        from memaware.experiments.convert_multinli import convert as do_convert

        do_convert(root)
    return {"metadata": meta, "rows": rows, "num_attrs": 2, "num_classes": 3}


IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")


def make_civilcomments(root: Path, fine: bool = False) -> dict:
    """``civilcomments/metadata_civilcomments_coarse.csv`` + ``civilcomments_coarse.csv`` built the way the standard
    script builds them: train rows once with a = 1 if no identity is mentioned (else 0); val/test rows repeated once
    per mentioned identity with a = identity index (comments with none dropped). ``fine``: every split repeated."""
    rng = np.random.default_rng(3)
    comments = []  # (split, y, identities, text)
    for s in SPLITS:
        for i in range(14):
            ids = sorted(set(rng.choice(8, size=int(rng.integers(0, 3)), replace=False).tolist()))
            if s > 0 and i < 8:
                ids = sorted(set(ids) | {i})  # every identity appears in val and test
            text = f'comment {s}-{i}: you are {"awful" if i % 2 else "nice"}, "really"\nsecond line'
            comments.append((s, i % 2, ids, text))
    rows, texts = [], []
    for s, y, ids, text in comments:
        if fine or s > 0:
            for a in ids:
                rows.append([len(texts), len(texts), s, y, a])
                texts.append(text)
        else:
            rows.append([len(texts), len(texts), s, y, 0 if ids else 1])
            texts.append(text)
    variant = "fine" if fine else "coarse"
    meta = _write_csv(
        root / "civilcomments" / f"metadata_civilcomments_{variant}.csv", ["id", "filename", "split", "y", "a"], rows
    )
    _write_csv(root / "civilcomments" / f"civilcomments_{variant}.csv", ["comment_text"], [[t] for t in texts])
    return {"metadata": meta, "rows": rows, "texts": texts, "num_attrs": 8, "num_classes": 2}


def rewrite_metadata(path: Path, edit) -> None:
    """Applies ``edit(header, rows) -> (header, rows)`` to a metadata CSV (for the bad-input tests)."""
    with open(path, newline="") as f:
        data = list(csv.reader(f))
    header, rows = edit(data[0], data[1:])
    _write_csv(path, header, rows)
