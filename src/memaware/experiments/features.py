"""Features of a real dataset (``memaware features``): every row embedded with a backbone, in eval mode without
gradients, and written as an .npz interchange file (x (n, d), y, a, split) that ``memaware train --data`` reads.
``frozen_features`` does the same for any dataset (a ``RealDataset`` such as a user's table, or ``GroupData``
features) and any backbone ``models.backbone_source`` accepts (a catalogue name, the user's own network)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.datasets import RealDataset, open_dataset
from ..data.groups import GroupData
from ..errors import ConfigError
from ..models.backbones import DEFAULT_MAX_LENGTH, batch_to


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
    dataset: RealDataset | GroupData,
    backbone: torch.nn.Module,
    feature_dim: int,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """(n, feature_dim) float32 features of every row of ``dataset``, in row order (eval mode, no gradients). A
    ``RealDataset``'s rows are loaded (``load``); a ``GroupData``'s x rows go to the backbone as they are."""
    n = len(dataset)
    load = dataset.load if hasattr(dataset, "load") else (lambda rows: dataset.x[rows])
    out = np.empty((n, feature_dim), dtype=np.float32)
    backbone.eval().to(device)
    name = getattr(dataset, "name", "data")
    bar = tqdm(total=n, desc=f"{name} features", unit="row", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        feats = backbone(batch_to(load(rows), device))
        if feats.ndim != 2 or feats.shape[1] != feature_dim:
            raise ConfigError(f"backbone returned features of shape {tuple(feats.shape)}, expected (b, {feature_dim})")
        out[start : start + len(rows)] = feats.float().cpu().numpy()
        bar.update(len(rows))
    bar.close()
    return out


def extract_features(
    dataset: str | RealDataset,
    data_dir: str | os.PathLike | None,
    backbone: Any,
    out: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 64,
    image_size: int = 224,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: str = "cpu",
    progress: bool = False,
) -> Features:
    """Opens ``dataset`` under ``data_dir`` (or takes an opened one, e.g. ``load_table``'s), embeds every row with
    ``backbone`` (``frozen_features``: a catalogue name with local ``weights`` or the local caches, never a
    download, tiny ones initialised from ``seed``; or the user's own network) and writes the .npz."""
    t0 = time.perf_counter()
    ds = open_dataset(dataset, data_dir, image_size=image_size) if isinstance(dataset, str) else dataset
    data, described, _ = frozen_features(
        ds, backbone, weights=weights, seed=seed, max_length=max_length, batch_size=batch_size, device=device,
        progress=progress,
    )  # fmt: skip
    path = data.save_npz(out)
    return Features(ds, described, data, path, time.perf_counter() - t0)


def frozen_features(
    dataset: RealDataset | GroupData,
    backbone: Any,
    *,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[GroupData, str, int]:
    """Every row of ``dataset`` embedded once by ``backbone`` in eval mode without gradients (a catalogue name, a
    ``package.module:name`` / ``file.py:name`` reference, an ``nn.Module`` or a zero-argument callable; built by
    ``BackboneSource(backbone).build(seed)``, its width probed on two training rows). Returns (the features as
    ``GroupData`` with the dataset's y, a, split; the backbone described for records; the feature width)."""
    from ..models.backbone_source import BackboneSource, sample_rows

    src = BackboneSource(backbone, weights, max_length)
    src.check_input(getattr(dataset, "modality", "features"))
    net, dim = src.build(seed)
    one_pass = getattr(dataset, "decode_cache", None) == "auto" and getattr(dataset, "decoded_images", 0) is None
    if one_pass:  # every image is read once here: a decoded copy would cost memory (or a file) and save nothing
        dataset.configure_decoding("off", dataset.cache_budget, dataset.cache_folder, dataset.decode_progress)
    try:
        if dim is None:
            dim = src.probe(net, sample_rows(dataset), device)
        data, described = _embedded(dataset, net, dim, src.label, src.catalogued, seed, batch_size, device, progress)
    finally:
        if one_pass:
            dataset.configure_decoding("auto", dataset.cache_budget, dataset.cache_folder, dataset.decode_progress)
    return data, described, dim


def _embedded(
    dataset: RealDataset | GroupData, net: torch.nn.Module, dim: int, label: str, catalogued: bool, seed: int,
    batch_size: int, device: str, progress: bool,
) -> tuple[GroupData, str]:  # fmt: skip
    feats = embed(dataset, net, dim, batch_size, device, progress=progress)
    meta = getattr(dataset, "data", dataset)
    data = GroupData.from_arrays(feats, meta.y, meta.split, meta.a, source=f"{label} features",
                                 num_classes=meta.num_classes)  # fmt: skip
    used = getattr(net, "weights_path", None)
    init = "random init" if catalogued else "its own initialisation"
    return data, f"{label} (weights {used})" if used else f"{label} ({init}, seed {seed})"


__all__ = ["Features", "embed", "extract_features", "frozen_features"]
