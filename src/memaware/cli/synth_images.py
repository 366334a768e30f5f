"""Write a small spurious-correlation image problem as a user would bring it: PNGs (a faint ring or bar on a red or
green background, with per-image pixel noise) and metadata.csv (filename, y, a, split, with names), ready for
`memaware train --data DIR/metadata.csv --backbone ...` (memaware.data.spurious_images)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .common import out_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=out_dir, help="output folder (images/ and metadata.csv)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.add_argument("--n-train", type=int, default=400, help="training images")
    p.add_argument("--n-val", type=int, default=300, help="validation images")
    p.add_argument("--n-test", type=int, default=300, help="test images")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--rho", type=float, default=0.9, help="P(background colour agrees with the glyph) in training")
    p.add_argument("--noise", type=float, default=0.3, help="std of the per-pixel noise (pixels in [0, 1])")
    p.add_argument(
        "--contrast", type=float, default=0.25, help="glyph strength, 0 (invisible) to 1 (light grey, plain to see)"
    )


def run(args: argparse.Namespace) -> int:
    if (Path(args.out) / "metadata.csv").exists():
        raise ConfigError(f"--out {args.out} already holds a metadata.csv; choose an empty folder")
    from ..data.spurious_images import write_spurious_images

    path = write_spurious_images(
        args.out, args.n_train, args.n_val, args.n_test, args.size, args.rho, args.noise, args.seed, args.contrast
    )
    if not args.quiet:
        print(summary(path, args.n_train + args.n_val + args.n_test))
    return 0


def summary(path: Path, n: int) -> str:
    return (
        f"wrote {n} PNGs and {path} (columns filename, y = ring/bar, a = red/green background, split); next: "
        f"memaware train --data {path} --backbone package.module:YourNet --method mat --out runs/mat"
    )
