"""Embed every row of a real dataset (Waterbirds, CelebA, MultiNLI, CivilComments in the community's standard
layout under --data-dir) with a backbone, in eval mode without gradients, and write the features as an .npz
interchange file (x (n, d), y, a, split) that `memaware train --data` reads. Nothing is downloaded: resnet50 and
bert weights come from --weights or the local caches."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones import BACKBONES, batch_to, make_backbone
from ..data.datasets import DATASETS, MODALITIES, RealDataset, open_dataset
from ..data.groups import GroupData
from ..errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_common

    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="dataset layout to read")
    p.add_argument("--data-dir", required=True, help="dataset root (e.g. holding waterbirds/ or metadata_*.csv)")
    p.add_argument(
        "--backbone",
        required=True,
        choices=list(BACKBONES),
        help="resnet50 / tiny-cnn for images, bert / tiny-text for text (tiny-*: random init from --seed)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="resnet50: a state-dict file (default: <torch hub dir>/checkpoints/resnet50-*.pth); "
        "bert: a save_pretrained directory (default: the local Hugging Face cache of bert-base-uncased)",
    )
    add_common(p, out_help="output .npz file (written atomically)")
    p.add_argument("--batch-size", type=int, default=64, help="rows embedded per forward pass")
    p.add_argument("--image-size", type=int, default=224, help="side of the square images fed to the backbone")
    p.add_argument("--max-length", type=int, default=220, help="bert: tokens kept per raw text")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


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


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    if BACKBONES[args.backbone] != MODALITIES[args.dataset]:
        raise ConfigError(
            f"backbone '{args.backbone}' takes {BACKBONES[args.backbone]} input but dataset '{args.dataset}' is "
            f"{MODALITIES[args.dataset]}; choose from "
            f"{', '.join(b for b, m in BACKBONES.items() if m == MODALITIES[args.dataset])}"
        )
    t0 = time.perf_counter()
    dataset = open_dataset(args.dataset, args.data_dir, image_size=args.image_size)
    backbone, dim = make_backbone(args.backbone, args.weights, seed=args.seed, max_length=args.max_length)
    feats = embed(dataset, backbone, dim, args.batch_size, args.device, progress=not args.quiet and sys.stderr.isatty())
    meta = dataset.data
    out = GroupData.from_arrays(
        feats, meta.y, meta.split, meta.a, source=f"{args.backbone} features", num_classes=meta.num_classes
    )
    path = out.save_npz(args.out)
    if not args.quiet:
        weights = getattr(backbone, "weights_path", None)
        described = (
            f"{args.backbone} (weights {weights})" if weights else f"{args.backbone} (random init, seed {args.seed})"
        )
        print(summary(dataset, described, out, path, time.perf_counter() - t0))
    return 0


def summary(dataset: RealDataset, backbone: str, out: GroupData, path: Path, seconds: float) -> str:
    """One paragraph: what was embedded, with what, into what, groups, caveats and the next command."""
    sizes = ", ".join(f"{k} {v:,}" for k, v in dataset.split_sizes().items())
    text = (
        f"Embedded {len(out):,} rows of {dataset.name} ({dataset.modality}; {sizes}) with {backbone} "
        f"into {out.dim}-dimensional features in {seconds:.1f} s and wrote {path}. Group id = y * A + a with "
        f"K = {out.num_classes} classes and A = {out.num_attrs} attribute values counted over all splits "
        f"({out.num_groups} groups)."
    )
    if dataset.notes:  # e.g. CivilComments: which splits hold duplicated rows (their averages are over those)
        text += " Note: " + "; ".join(dataset.notes) + "."
    text += f" Next: memaware train --data {path} --method mat --out runs/{dataset.name}-mat"
    return textwrap.fill(text, width=110, break_long_words=False, break_on_hyphens=False)
