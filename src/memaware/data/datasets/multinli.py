"""MultiNLI (Williams et al. 2018) as in the group-robustness literature: y in {0 contradiction, 1 entailment,
2 neutral}, a = a negation word (nobody, no, never, nothing) in the second sentence.

Layouts (tried in this order, under ``--data-dir`` or with it pointing at the ``multinli`` folder):

- ``standard``: ``multinli/metadata_multinli.csv`` (or ``metadata_multinli.csv``; id, filename, split, y, a) whose
  ``filename`` is a row index into the token arrays;
- ``group_dro``: ``multinli/data/metadata_random.csv`` (group_DRO's random 50/20/30 split: an index column, then
  gold_label, sentence2_has_negation, split), read as XRM's set-up script does: y = gold_label, a =
  sentence2_has_negation, split, and row i (id = filename = i) is row i of the token arrays.

The token arrays come from one of two sources, converted once by ``memaware convert-multinli`` into the plain file
``multinli/features_bert_128.npz`` (input_ids, input_mask, segment_ids (N, 128) and label_id (N,)) that this module
reads with ``allow_pickle=False``:

- the GLUE feature caches of ``multinli_bert_features.tar.gz``
  (``multinli/glue_data/MNLI/cached_{train,dev}_bert-base-uncased_128_mnli[-mm]``, concatenated in the order train,
  dev-matched, dev-mismatched), which are *pickled* Python objects and so are read only by that command;
- the official release ``multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl`` (in ``multinli/data/``,
  ``multinli/multinli_1.0/`` or ``multinli/``), whose lines metadata_random.csv's index column points at, tokenised
  with a local ``transformers`` tokenizer folder exactly as the caches were built (``convert-multinli --tokenizer``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...lazy import lazy_module
from ..groups import GroupData
from .common import Metadata, RealDataset, check_metadata, check_root, group_data, index_column, read_metadata
from .layouts import DatasetNotFound, Found, Layout, Located, Need, detect
from .tables import int_column, read_csv_columns

torch = lazy_module("torch")

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


RELEASE_FILES = tuple(f"multinli_1.0_{p}.jsonl" for p in ("train", "dev_matched", "dev_mismatched"))
RELEASE_DIRS = ("data", "multinli_1.0", ".")
RANDOM_METADATA = "metadata_random.csv"
_GLUE = "the GLUE feature caches of multinli_bert_features.tar.gz (group_DRO's release)"
LAYOUTS = (
    Layout(NAME, "standard", "metadata_multinli.csv of the XRM / SubpopBench set-up scripts", (NAME, "."),
           Need(f"metadata_{NAME}.csv", "written by the XRM / SubpopBench / BalancingGroups set-up scripts")),
    Layout(NAME, "group_dro", "group_DRO's multinli/data/metadata_random.csv", (NAME,),
           Need(f"data/{RANDOM_METADATA}", "group_DRO's dataset_metadata/multinli/metadata_random.csv")),
)
HOW_TO_GET = (
    f"put group_DRO's dataset_metadata/multinli/{RANDOM_METADATA} into <data-dir>/{NAME}/data/ and either extract "
    f"multinli_bert_features.tar.gz into <data-dir>/{NAME}/glue_data/MNLI/ or put the MultiNLI 1.0 jsonl files "
    f"beside {RANDOM_METADATA}"
)


def glue_paths(folder: Path) -> list[Path]:
    """The three pickled GLUE caches under the dataset ``folder``, in concatenation order."""
    return [folder.joinpath(*GLUE_DIR, f) for f in GLUE_FILES]


def features_path(folder: Path) -> Path:
    """Where ``memaware convert-multinli`` writes, and this loader reads, the plain token arrays."""
    return folder / FEATURES_FILE


def release_dir(folder: Path) -> Path | None:
    """The folder holding the three MultiNLI 1.0 jsonl files, if any."""
    for rel in RELEASE_DIRS:
        if all((folder / rel / f).is_file() for f in RELEASE_FILES):
            return folder / rel
    return None


def token_folder(found: Found) -> Path:
    """The folder whose caches / jsonl / converted arrays belong to ``found``: its own, or ``<root>/multinli``
    when the metadata sits at the root."""
    for folder in (found.folder, found.root / NAME):
        if (folder / GLUE_DIR[0]).is_dir() or features_path(folder).is_file() or release_dir(folder) is not None:
            return folder
    return found.folder


def dataset_folder(root: Path) -> Path:
    """The MultiNLI folder under ``root`` that ``convert-multinli`` reads and writes."""
    try:
        return token_folder(detect(root, LAYOUTS, HOW_TO_GET))
    except DatasetNotFound:
        for folder in (root / NAME, root):
            if (folder / GLUE_DIR[0]).is_dir() or release_dir(folder) is not None:
                return folder
        return root / NAME


def read_random_metadata(path: Path) -> tuple[Metadata, np.ndarray]:
    """group_DRO's metadata_random.csv as standard rows (filename = row number) and its index column (the line
    of each row in the concatenated jsonl files)."""
    source = str(path)
    cols = read_csv_columns(
        path, ("", "gold_label", "sentence2_has_negation", "split"), LAYOUTS[1].marker.producer, index_column=True
    )
    line = int_column(cols[""], "index", source)
    y = int_column(cols["gold_label"], "gold_label", source)
    a = int_column(cols["sentence2_has_negation"], "sentence2_has_negation", source)
    split = int_column(cols["split"], "split", source)
    meta = check_metadata(path, [str(i) for i in range(len(y))], split, y, a, NUM_CLASSES)
    return meta, line


def locate(root: Path) -> Located:
    """Detects the layout under ``root`` and reads its rows (the token arrays are not read here)."""
    found = detect(root, LAYOUTS, HOW_TO_GET)
    if found.layout.name == "standard":
        meta = read_metadata(found.marker, NUM_CLASSES)
    else:
        meta, _ = read_random_metadata(found.marker)
    folder = token_folder(found)
    tokens = features_path(folder)
    notes = (f"token arrays converted from {token_source(tokens)}",) if tokens.is_file() else ()
    return Located(found, meta, [str(i) for i in range(len(meta))], tokens, notes, folder)


def token_source(path: Path) -> str:
    """What ``convert-multinli`` converted ``path`` from, as it recorded it (older files: the GLUE caches)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz["source"]) if "source" in npz.files else "the pickled GLUE caches"
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        return "an unreadable file"


def conversion_hint(folder: Path, root: Path) -> str:
    """What makes ``features_path(folder)``: the command to run, or the files to get first."""
    if all(p.is_file() for p in glue_paths(folder)):
        return f"convert the GLUE caches once with `memaware convert-multinli --data-dir {root}`"
    if release_dir(folder) is not None:
        return (
            f"tokenise the MultiNLI 1.0 jsonl files once with `memaware convert-multinli --data-dir {root} "
            f"--tokenizer DIR` (DIR: a local bert-base-uncased tokenizer folder)"
        )
    return (
        f"extract {_GLUE} into {folder.joinpath(*GLUE_DIR)}/ or put "
        f"{', '.join(RELEASE_FILES)} into {folder / 'data'}/, then run `memaware convert-multinli`"
    )


def missing_inputs(loc: Located) -> list[str]:
    """The converted token file, when it is absent (and what makes it)."""
    return [] if loc.inputs.is_file() else [f"{loc.inputs.name} ({conversion_hint(loc.payload, loc.found.root)})"]


def read_features(path: Path, root: Path) -> dict[str, np.ndarray]:
    """Reads and checks the converted arrays: three integer (N, L) arrays and optionally label_id (N,)."""
    source = str(path)
    if not path.is_file():
        raise DataError(f"{source}: not found; {conversion_hint(path.parent, root)}")
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
    """Opens MultiNLI from any layout under ``root`` and its converted token arrays (``image_size`` is ignored)."""
    del image_size
    root = check_root(root)
    loc = locate(root)
    meta, path = loc.meta, loc.meta.path
    arrays = read_features(loc.inputs, root)
    n = arrays["input_ids"].shape[0]
    index = index_column(meta, n, f"the token arrays {loc.inputs}")
    if "label_id" in arrays:  # the arrays carry the label too: a mismatch means metadata and arrays disagree
        cached = arrays["label_id"].reshape(-1)[index]
        bad = (cached >= 0) & (cached != meta.y)  # -1: arrays without labels
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{path}: column 'y' is {meta.y[i]} in data row {i + 1} but the token arrays' row {index[i]} has "
                f"label {cached[i]} (metadata and token arrays do not belong together)"
            )
    arrays = {k: arrays[k] for k in TOKEN_KEYS}
    return TokenDataset(NAME, group_data(meta, NUM_CLASSES), root, path, index, arrays)
