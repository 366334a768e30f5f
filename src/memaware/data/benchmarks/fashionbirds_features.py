"""FashionBirds' default recipe: the 160 px RGB renders (``fashionbirds_render``) embedded by the ImageNet-pretrained
EfficientNet-Lite0 (``models.efficientnet``, 1280 pooled features), cached.

This puts the benchmark in the paper's regime: a linear head on 1280 pretrained features of 4,795 training images
can fit its few minority examples through directions the majority does not use (it memorizes them), which a head
on 784 raw pixels cannot. Extraction renders the next batch in a second thread while the network, compiled for
inference (``models.inference``: ONNX Runtime when installed, else frozen torch), embeds the current one
(BENCHMARKS.md, "FashionBirds feature extraction", has the rates). The features of each split are cached
under ``<cache dir>/fashionbirds/`` in a file named by a hash of everything that decides them (every row's
garment, background and crop, the render constants, the weights file's SHA-256), so preparing twice, or another
seed's sweep of the same data, costs nothing, and any change recomputes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from ...models.inference import inference_engine
from ..groups import SPLIT_NAMES, TEST, TRAIN, VAL, GroupData
from .common import load_cached_array, resolve_cache_dir, save_cached_array, standardize_columns, to_group_data
from .fashionbirds_render import CANVAS, PER_GROUP, FashionBirdsImages, open_fashionbirds_images

BATCH = 64  # images per forward pass: ~20 MB of 160 px scenes, large enough for oneDNN to keep both cores busy


def cache_paths(ds: FashionBirdsImages, weights_sha: str, cache_dir: str | os.PathLike | None) -> dict[int, object]:
    """{split: the .npy file caching that split's features}, named by the hash of what decides them."""
    folder = resolve_cache_dir(cache_dir) / "fashionbirds"
    out = {}
    for split in (TRAIN, VAL, TEST):
        rows = np.flatnonzero(ds.plan.split == split)
        key = ds.plan.key(rows, "efficientnet-lite0", weights_sha, CANVAS)
        out[split] = folder / f"{SPLIT_NAMES[split]}-{key[:32]}.npy"
    return out


def rendered_batches(ds: FashionBirdsImages, rows: np.ndarray, batch: int = BATCH) -> Iterator[torch.Tensor]:
    """``ds.load`` of ``rows`` in chunks of ``batch``, each chunk rendered in a worker thread while the caller works
    on the previous one (torch and NumPy release the GIL in the heavy parts of both)."""
    chunks = [rows[start : start + batch] for start in range(0, len(rows), batch)]
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fashionbirds-render") as pool:
        pending = pool.submit(ds.load, chunks[0])
        for following in [*chunks[1:], None]:
            images = pending.result()
            if following is not None:
                pending = pool.submit(ds.load, following)
            yield images


def embed_rows(
    ds: FashionBirdsImages, rows: np.ndarray, embed: Callable[[torch.Tensor], torch.Tensor], bar: tqdm | None = None
) -> np.ndarray:
    """(len(rows), d) float32 features ``embed(ds.load(rows))``, rendering overlapped with embedding."""
    out: list[np.ndarray] = []
    for images in rendered_batches(ds, rows):
        out.append(embed(images).numpy())
        if bar is not None:
            bar.update(len(images))
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


@torch.no_grad()
def pretrained_features(
    ds: FashionBirdsImages,
    weights: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(n, 1280) float32 EfficientNet-Lite0 features of every row of ``ds`` (eval mode), from the cache when there."""
    from ...models.efficientnet import file_sha256, make_efficientnet_lite0, weights_path

    path = weights_path(weights)
    paths = cache_paths(ds, file_sha256(path), cache_dir)
    out = np.empty((len(ds), 1280), dtype=np.float32)
    todo = []
    for split, file in paths.items():
        rows = np.flatnonzero(ds.plan.split == split)
        cached = load_cached_array(file, len(rows))
        if cached is not None and cached.shape[1] == out.shape[1]:
            out[rows] = cached
        else:
            todo.append((split, rows))
    if not todo:
        return out
    net, _ = make_efficientnet_lite0(path)
    embed = inference_engine(net)  # ONNX Runtime when installed, else frozen torch (models.inference)
    total = sum(len(rows) for _, rows in todo)
    with tqdm(total=total, desc="fashionbirds features", unit="img", disable=not progress, leave=False) as bar:
        for split, rows in todo:
            feats = embed_rows(ds, rows, embed, bar)
            out[rows] = feats
            save_cached_array(paths[split], feats)
    return out


def build_pretrained(
    seed: int = 0,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    pair: str = "hard",
    train_groups: str = "waterbirds",
    scale: float = 1.0,
    val_per_group: int = PER_GROUP,
    test_per_group: int = PER_GROUP,
    standardize: bool = False,
    progress: bool = False,
    weights: str | os.PathLike | None = None,
) -> GroupData:
    """FashionBirds-RGB (``fashionbirds_render``) as a ``GroupData`` of (n, 1280) pretrained features."""
    ds = open_fashionbirds_images(
        source, CANVAS, seed=seed, pair=pair, train_groups=train_groups, scale=scale,
        val_per_group=val_per_group, test_per_group=test_per_group,
    )  # fmt: skip
    x = pretrained_features(ds, weights, cache_dir, progress)
    split = ds.plan.split
    if standardize:
        x = standardize_columns(x, split)
    return to_group_data(x, ds.plan.y, ds.plan.a, split, ds.name)


__all__ = ["BATCH", "build_pretrained", "cache_paths", "embed_rows", "pretrained_features", "rendered_batches"]
