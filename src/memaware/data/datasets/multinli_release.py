"""MultiNLI's token arrays from the official release instead of the pickled GLUE caches: the three
``multinli_1.0_*.jsonl`` files, the rows group_DRO's ``metadata_random.csv`` selects (its index column is the line in
the files concatenated as train, dev-matched, dev-mismatched), tokenised with a ``transformers`` tokenizer loaded
from a local folder, never from a hub.

Each pair becomes what the GLUE caches hold (``utils_glue.convert_examples_to_features`` with BERT's settings):
wordpieces of sentence1 (A) and sentence2 (B); while len(A) + len(B) > L - 3 drop the last piece of the longer one
(of B on a tie); ``[CLS] A [SEP] B [SEP]`` with segment ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``; mask 1 on
real tokens; zero padding to L = 128. A pair with an empty sentence2 is ``[CLS] A [SEP]`` with A cut to L - 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ...errors import ConfigError, DataError
from .multinli import LABELS, RELEASE_FILES, read_random_metadata, release_dir
from .tables import read_json_lines

MAX_LENGTH = 128
VOCAB_FILES = ("vocab.txt", "tokenizer.json")
_PRODUCER = "a line of the MultiNLI 1.0 release"


def load_tokenizer(folder: str | os.PathLike) -> Any:
    """A ``transformers`` tokenizer from a local folder (``save_pretrained`` output, e.g. bert-base-uncased's),
    with downloads off; a folder without vocabulary is a one-line error."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--tokenizer {path}: no such folder (a local tokenizer folder, e.g. bert-base-uncased's)")
    if not any((path / f).is_file() for f in VOCAB_FILES):
        raise ConfigError(
            f"--tokenizer {path}: no {' or '.join(VOCAB_FILES)} in it (save one there with "
            f"`AutoTokenizer.from_pretrained('bert-base-uncased').save_pretrained(DIR)` on a machine with the model)"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ConfigError(f"tokenising MultiNLI needs transformers: pip install 'memaware[text]' ({e})") from None
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise ConfigError(f"--tokenizer {path}: cannot load a tokenizer from it ({first})") from None


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drops the last token of the longer list (of ``b`` on a tie) until len(a) + len(b) <= budget."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def word_pieces(tokenizer: Any, texts: list[str], progress: bool = False, chunk: int = 8192) -> list[list[int]]:
    """The word-piece ids of each text (no special tokens), tokenised ``chunk`` texts at a time so that a progress
    bar can follow the ~400k sentences of the release."""
    out: list[list[int]] = []
    for lo in tqdm(range(0, len(texts), chunk), desc="tokenising", unit="chunk", disable=not progress, leave=False):
        out += tokenizer(texts[lo : lo + chunk], add_special_tokens=False)["input_ids"]
    return out


def encode_pairs(
    tokenizer: Any, first: list[str], second: list[str], length: int = MAX_LENGTH, progress: bool = False
) -> dict[str, np.ndarray]:
    """input_ids (N, L) int32, input_mask and segment_ids (N, L) int8 for N sentence pairs, as the GLUE caches."""
    n = len(first)
    pieces_a = word_pieces(tokenizer, first, progress)
    pieces_b = word_pieces(tokenizer, second, progress)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    out = {
        "input_ids": np.full((n, length), pad, dtype=np.int32),
        "input_mask": np.zeros((n, length), dtype=np.int8),
        "segment_ids": np.zeros((n, length), dtype=np.int8),
    }
    for i, (a, b, text_b) in enumerate(zip(pieces_a, pieces_b, second, strict=True)):
        if text_b:
            a, b = truncate_pair(a, b, length - 3)
            ids = [cls, *a, sep, *b, sep]
            segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        else:
            ids = [cls, *a[: length - 2], sep]
            segments = [0] * len(ids)
        out["input_ids"][i, : len(ids)] = ids
        out["input_mask"][i, : len(ids)] = 1
        out["segment_ids"][i, : len(ids)] = segments
    return out


def tokenize_release(
    folder: Path, tokenizer: Any, length: int = MAX_LENGTH, progress: bool = False
) -> dict[str, Any]:
    """The token arrays (plus label_id (N,) and file_rows) for the rows of ``folder/data/metadata_random.csv``,
    read from the jsonl files; each row's jsonl label must equal its gold_label."""
    meta_path = folder / "data" / "metadata_random.csv"
    if not meta_path.is_file():
        raise DataError(
            f"{meta_path}: not found (group_DRO's dataset_metadata/multinli/metadata_random.csv: it picks the rows "
            f"of the jsonl files and their split)"
        )
    meta, line = read_random_metadata(meta_path)
    source = release_dir(folder)
    if source is None:
        raise DataError(
            f"no {', '.join(RELEASE_FILES)} in {folder / 'data'}/, {folder / 'multinli_1.0'}/ or {folder}/ "
            f"(unzip the MultiNLI 1.0 release, multinli_1.0.zip, there)"
        )
    first, second, labels, counts = [], [], [], []
    for name in RELEASE_FILES:
        cols = read_json_lines(source / name, ("sentence1", "sentence2", "gold_label"), _PRODUCER)
        first += cols["sentence1"]
        second += cols["sentence2"]
        labels += cols["gold_label"]
        counts.append(len(cols["gold_label"]))
    bad = (line < 0) | (line >= len(labels))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{meta_path}: index {line[i]} in data row {i + 1} is past the {len(labels)} jsonl lines")
    codes = {name: k for k, name in enumerate(LABELS)}
    label_id = np.asarray([codes.get(labels[j], -1) for j in line.tolist()], dtype=np.int64)
    wrong = label_id != meta.y
    if wrong.any():
        i = int(np.argmax(wrong))
        raise DataError(
            f"{meta_path}: gold_label is {meta.y[i]} in data row {i + 1} but jsonl line {line[i]} says "
            f"{labels[line[i]]!r} (metadata and jsonl files do not belong together)"
        )
    rows = line.tolist()
    arrays: dict[str, Any] = encode_pairs(
        tokenizer, [first[j] for j in rows], [second[j] for j in rows], length, progress
    )
    arrays["label_id"] = label_id
    # rows taken from each file (lines labelled '-' are in no split, as in the caches)
    edges = np.cumsum([0, *counts])
    taken = [int(((line >= lo) & (line < hi)).sum()) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return {"arrays": arrays, "file_rows": dict(zip(RELEASE_FILES, taken, strict=True)), "rows": len(rows)}


__all__ = ["load_tokenizer", "encode_pairs", "truncate_pair", "tokenize_release", "MAX_LENGTH"]
