"""Features of a real dataset (``memaware features``): every row embedded with a backbone, in eval mode without
gradients, and written as an .npz interchange file (x (n, d), y, a, split) that ``memaware train --data`` reads."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.datasets import RealDataset, open_dataset
from ..data.groups import GroupData
from ..errors import ConfigError
from ..models.backbones import DEFAULT_MAX_LENGTH, batch_to, make_backbone


@dataclass(frozen=True)
class Features:
    """What ``extract_features`` did: the dataset read, the backbone (described), the features and where."""

    dataset: RealDataset
    backbone: str
    data: GroupData
    path: Path
    seconds: float


@torch.no_grad()
def embed(
    dataset: RealDataset,
    backbone: torch.nn.Module,
    feature_dim: int,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """(n, feature_dim) float32 features of every row of ``dataset``, in row order (eval mode, no gradients)."""
    n = len(dataset)
    out = np.empty((n, feature_dim), dtype=np.float32)
    backbone.eval().to(device)
    bar = tqdm(total=n, desc=f"{dataset.name} features", unit="row", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        feats = backbone(batch_to(dataset.load(rows), device))
        if feats.ndim != 2 or feats.shape[1] != feature_dim:
            raise ConfigError(f"backbone returned features of shape {tuple(feats.shape)}, expected (b, {feature_dim})")
        out[start : start + len(rows)] = feats.float().cpu().numpy()
        bar.update(len(rows))
    bar.close()
    return out


def extract_features(
    dataset: str,
    data_dir: str | os.PathLike,
    backbone: str,
    out: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 64,
    image_size: int = 224,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: str = "cpu",
    progress: bool = False,
) -> Features:
    """Opens ``dataset`` under ``data_dir``, embeds every row with ``backbone`` (``backbones.make_backbone``: local
    ``weights`` or the local caches, never a download; tiny ones initialised from ``seed``) and writes the .npz."""
    t0 = time.perf_counter()
    ds = open_dataset(dataset, data_dir, image_size=image_size)
    net, dim = make_backbone(backbone, weights, seed=seed, max_length=max_length)
    feats = embed(ds, net, dim, batch_size, device, progress=progress)
    meta = ds.data
    data = GroupData.from_arrays(
        feats, meta.y, meta.split, meta.a, source=f"{backbone} features", num_classes=meta.num_classes
    )
    path = data.save_npz(out)
    used = getattr(net, "weights_path", None)
    described = f"{backbone} (weights {used})" if used else f"{backbone} (random init, seed {seed})"
    return Features(ds, described, data, path, time.perf_counter() - t0)


__all__ = ["Features", "embed", "extract_features"]
