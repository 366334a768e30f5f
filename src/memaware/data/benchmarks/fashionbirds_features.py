"""FashionBirds' default recipe: the 160 px RGB renders (``fashionbirds_render``) embedded by the ImageNet-pretrained
EfficientNet-Lite0 (``models.efficientnet``, 1280 pooled features), cached.

This puts the benchmark in the paper's regime: a linear head on 1280 pretrained features of 4,795 training images
can fit its few minority examples through directions the majority does not use (it memorizes them), which a head
on 784 raw pixels cannot. Extraction runs at tens of images/s on one CPU thread; the features of each split are
cached under ``<cache dir>/fashionbirds/`` in a file named by a hash of everything that decides them (every row's
garment, background and crop, the render constants, the weights file's SHA-256), so preparing twice, or another
seed's sweep of the same data, costs nothing, and any change recomputes.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm.auto import tqdm

from ..groups import SPLIT_NAMES, TEST, TRAIN, VAL, GroupData
from .common import load_cached_array, resolve_cache_dir, save_cached_array, standardize_columns, to_group_data
from .fashionbirds_render import CANVAS, PER_GROUP, FashionBirdsImages, open_fashionbirds_images

BATCH = 32  # images per forward pass: small enough to keep memory low, large enough to keep the CPU busy


def cache_paths(ds: FashionBirdsImages, weights_sha: str, cache_dir: str | os.PathLike | None) -> dict[int, object]:
    """{split: the .npy file caching that split's features}, named by the hash of what decides them."""
    folder = resolve_cache_dir(cache_dir) / "fashionbirds"
    out = {}
    for split in (TRAIN, VAL, TEST):
        rows = np.flatnonzero(ds.plan.split == split)
        key = ds.plan.key(rows, "efficientnet-lite0", weights_sha, CANVAS)
        out[split] = folder / f"{SPLIT_NAMES[split]}-{key[:32]}.npy"
    return out


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
    net.eval()
    total = sum(len(rows) for _, rows in todo)
    with tqdm(total=total, desc="fashionbirds features", unit="img", disable=not progress, leave=False) as bar:
        for split, rows in todo:
            feats = np.empty((len(rows), out.shape[1]), dtype=np.float32)
            for start in range(0, len(rows), BATCH):
                chunk = rows[start : start + BATCH]
                feats[start : start + len(chunk)] = net(ds.load(chunk)).numpy()
                bar.update(len(chunk))
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


__all__ = ["build_pretrained", "cache_paths", "pretrained_features"]
