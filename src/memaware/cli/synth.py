"""Write a Setup 2.1 dataset (paper Sec. 2) as an .npz interchange file with keys x, y, a, split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import GroupData, make_setup21
from .common import out_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=out_file, help="output .npz file")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.add_argument("--n-train", type=int, default=1000, help="training examples")
    p.add_argument("--n-val", type=int, default=1000, help="validation examples")
    p.add_argument("--n-test", type=int, default=1000, help="test examples")
    p.add_argument("--noise-dim", type=int, default=1798, help="noise dimensions d")
    p.add_argument("--gamma", type=float, default=5.0, help="scale of the spurious feature")
    p.add_argument("--sigma", type=float, default=0.5, help="noise std (0: noiseless)")
    p.add_argument("--rho", type=float, default=0.9, help="P(a == y) in the training split")
    p.add_argument("--rho-eval", type=float, default=0.5, help="P(a == y) in validation and test")
    p.add_argument("--jitter", type=float, default=0.12, help="relative jitter of the core/spurious features")
    p.add_argument("--num-classes", type=int, default=2, help="classes K (= attribute values)")


def run(args: argparse.Namespace) -> int:
    data = make_setup21(
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        noise_dim=args.noise_dim,
        gamma=args.gamma,
        sigma=args.sigma,
        rho_train=args.rho,
        rho_eval=args.rho_eval,
        jitter=args.jitter,
        num_classes=args.num_classes,
        seed=args.seed,
    )
    path = data.save_npz(args.out)
    if not args.quiet:
        print(summary(data, path))
    return 0


def summary(data: GroupData, path: Path) -> str:
    return (
        f"wrote {path}: {len(data)} examples x {data.dim} features, {data.num_classes} classes, "
        f"{data.num_attrs} attribute values"
    )
