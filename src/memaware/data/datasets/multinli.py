"""MultiNLI (Williams et al. 2018) as in the group-robustness literature: y in {0 contradiction, 1 entailment,
2 neutral}, a = a negation word (nobody, no, never, nothing) in the second sentence.

Layout: ``<root>/multinli/metadata_multinli.csv`` (or ``<root>/metadata_multinli.csv``), whose ``filename`` is a
row index into the GLUE feature caches of ``multinli_bert_features.tar.gz`` concatenated in the order train,
dev-matched, dev-mismatched (``<root>/multinli/glue_data/MNLI/cached_{train,dev}_bert-base-uncased_128_mnli[-mm]``).
Those caches are *pickled* Python objects, so they are never read here: ``memaware convert-multinli`` converts them
once, explicitly, into the plain arrays ``<root>/multinli/features_bert_128.npz`` (input_ids, input_mask,
segment_ids (N, 128) and label_id (N,)), and this module reads only that file, with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from ..groups import GroupData
from .common import RealDataset, check_root, find_metadata, group_data, index_column, read_metadata

NAME = "multinli"
NUM_CLASSES = 3
LABELS = ("contradiction", "entailment", "neutral")
GLUE_DIR = ("glue_data", "MNLI")
GLUE_FILES = (
    "cached_train_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli-mm",
)
FEATURES_FILE = "features_bert_128.npz"
TOKEN_KEYS = ("input_ids", "input_mask", "segment_ids")
# the names Hugging Face models take for the same arrays
BATCH_KEYS = {"input_ids": "input_ids", "input_mask": "attention_mask", "segment_ids": "token_type_ids"}


def glue_paths(root: Path) -> list[Path]:
    """The three pickled GLUE caches, in concatenation order."""
    return [root.joinpath(NAME, *GLUE_DIR, f) for f in GLUE_FILES]


def features_path(root: Path) -> Path:
    """Where ``memaware convert-multinli`` writes, and this loader reads, the plain token arrays."""
    return root / NAME / FEATURES_FILE


def read_features(path: Path, root: Path) -> dict[str, np.ndarray]:
    """Reads and checks the converted arrays: three integer (N, L) arrays and optionally label_id (N,)."""
    source = str(path)
    if not path.is_file():
        raise DataError(
            f"{source}: not found; convert the pickled GLUE caches once with "
            f"`memaware convert-multinli --data-dir {root}`"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in (*TOKEN_KEYS, "label_id")}
    except ValueError as e:
        raise DataError(f"{source}: holds an object (pickled) array; rerun `memaware convert-multinli`") from e
    except (zipfile.BadZipFile, OSError, EOFError, AttributeError) as e:
        raise DataError(f"{source}: not a readable .npz file ({type(e).__name__}); rerun convert-multinli") from e
    for key in TOKEN_KEYS:
        if key not in arrays:
            raise DataError(f"{source}: missing array '{key}'; rerun `memaware convert-multinli --data-dir {root}`")
        arr = arrays[key]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{source}: array '{key}' must be a 2-D integer array, found {arr.dtype} {arr.shape}")
        if arr.shape != arrays[TOKEN_KEYS[0]].shape:
            raise DataError(f"{source}: array '{key}' has shape {arr.shape}, input_ids {arrays['input_ids'].shape}")
    return arrays


class TokenDataset(RealDataset):
    """Pre-tokenised text: ``load`` returns {'input_ids', 'attention_mask', 'token_type_ids'}, each (b, L) int64."""

    modality = "text"

    def __init__(self, name: str, data: GroupData, root: Path, metadata_path: Path, index: np.ndarray, arrays: dict):
        super().__init__(name, data, root, metadata_path)
        self.index, self.arrays = index, arrays

    def _load(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        items = self.index[rows]
        return {BATCH_KEYS[k]: torch.from_numpy(self.arrays[k][items].astype(np.int64)) for k in TOKEN_KEYS}


def open_multinli(root: str | Path, image_size: int = 224) -> TokenDataset:
    """Opens MultiNLI from ``root`` and its converted token arrays (``image_size`` is ignored)."""
    del image_size
    root = check_root(root)
    path = find_metadata(root, NAME, f"metadata_{NAME}.csv")
    meta = read_metadata(path, NUM_CLASSES)
    arrays = read_features(features_path(root), root)
    n = arrays["input_ids"].shape[0]
    index = index_column(meta, n, f"the converted GLUE caches {features_path(root)}")
    if "label_id" in arrays:  # the caches carry the label too: a mismatch means metadata and caches disagree
        cached = arrays["label_id"].reshape(-1)[index]
        bad = (cached >= 0) & (cached != meta.y)  # -1: a cache without labels
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{path}: column 'y' is {meta.y[i]} in data row {i + 1} but the GLUE cache row {index[i]} has label "
                f"{cached[i]} (metadata and caches do not belong together)"
            )
    arrays = {k: arrays[k] for k in TOKEN_KEYS}
    return TokenDataset(NAME, group_data(meta, NUM_CLASSES), root, path, index, arrays)
