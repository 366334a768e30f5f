"""The paper reproduction on built-in data (``memaware reproduce``): the Theorem 2.2 phase diagram, Fig. 1
(interpretable setup) and Fig. 3 (good / bad / ugly memorization) at their defaults, each writing its PNG + JSON
into one directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..theory.sweep import SweepConfig
from ..threads import use_one_intraop_thread
from .fig1 import run_fig1, save_fig1
from .fig3 import run_fig3, save_fig3
from .theorem import run_theorem

# theorem first: fig1 and fig3 switch torch to one intra-op thread for the rest of the process (memaware.threads)
EXPERIMENTS = ("theorem", "fig1", "fig3")


def experiment_order(only: Iterable[str] = EXPERIMENTS) -> list[str]:
    """The experiments of ``only`` in the order they must run (``EXPERIMENTS``), each once."""
    names = set(only)
    unknown = sorted(names - set(EXPERIMENTS))
    if unknown:
        raise ConfigError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    return sorted(names, key=EXPERIMENTS.index)


def run_experiment(name: str, out: str | Path, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Runs experiment ``name`` at its defaults, writes its files into ``out`` and returns its JSON object."""
    if name == "theorem":
        return run_theorem(SweepConfig(seed=seed), out, quiet=not progress)
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment '{name}'; choose from {', '.join(EXPERIMENTS)}")
    use_one_intraop_thread()  # small, latency-bound models (memaware.threads)
    if name == "fig1":
        res, fitted = run_fig1(seed=seed, progress=progress)
        save_fig1(res, fitted, out)
        return res
    res, problems, curves = run_fig3(seed=seed, progress=progress)
    save_fig3(res, problems, curves, out)
    return res


def run_reproduce(
    out: str | Path, seed: int = 0, only: Iterable[str] = EXPERIMENTS, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Every experiment of ``only``, in order, into ``out``: {name: its JSON object}."""
    return {name: run_experiment(name, out, seed, progress) for name in experiment_order(only)}


__all__ = ["EXPERIMENTS", "experiment_order", "run_experiment", "run_reproduce"]
