"""The paper reproduction on built-in data (``memaware reproduce``): the Theorem 2.2 phase diagram, Fig. 1
(interpretable setup), Fig. 3 (good / bad / ugly memorization), Table 1 (every method on the offline analogues of
the four benchmarks) and Fig. 2 (per-group memorization under ERM and MAT), each a stage writing its PNG + JSON
into one directory, then the claim-by-claim report (``memaware.report``) built from those JSON files."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# the order stages run in: theorem first (its batched solves need torch's default threads, and fig1 / fig3 switch
# torch to one intra-op thread for the rest of the process: memaware.threads); table1 before fig2, whose
# FashionBirds features it builds (fig2 then reads them from the feature cache)
EXPERIMENTS = ("theorem", "table1", "fig2", "fig1", "fig3")
SIZES = ("quick", "full", "smoke")


def experiment_order(only: Iterable[str] = EXPERIMENTS) -> list[str]:
    """The experiments of ``only`` in the order they must run (``EXPERIMENTS``), each once."""
    names = set(only)
    unknown = sorted(names - set(EXPERIMENTS))
    if unknown:
        raise ConfigError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    return sorted(names, key=EXPERIMENTS.index)


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ConfigError(f"unknown size '{size}'; choose from {', '.join(SIZES)}")
    return size


def run_experiment(
    name: str,
    out: str | Path,
    seed: int = 0,
    progress: bool = False,
    size: str = "quick",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs experiment ``name`` (Table 1 and Fig. 2 at ``size``: quick, full or smoke; the others at their
    defaults), writes its files into ``out`` and returns its JSON object."""
    check_size(size)
    if name == "theorem":
        from ..theory.sweep import SweepConfig
        from .theorem import run_theorem

        return run_theorem(SweepConfig(seed=seed), out, quiet=not progress)
    if name == "table1":
        from .table1 import run_table1

        return run_table1(out, seed=seed, size=size, progress=progress, log=log)
    if name == "fig2":
        from .fig2 import run_fig2

        return run_fig2(out, seed=seed, size=size, progress=progress)
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment '{name}'; choose from {', '.join(EXPERIMENTS)}")
    from ..threads import use_one_intraop_thread

    use_one_intraop_thread()  # small, latency-bound models (memaware.threads)
    if name == "fig1":
        from .fig1 import run_fig1, save_fig1

        res, fitted = run_fig1(seed=seed, progress=progress)
        save_fig1(res, fitted, out)
        return res
    from .fig3 import run_fig3, save_fig3

    res, problems, curves = run_fig3(seed=seed, progress=progress)
    save_fig3(res, problems, curves, out)
    return res


def run_reproduce(
    out: str | Path, seed: int = 0, only: Iterable[str] = EXPERIMENTS, progress: bool = False, size: str = "quick"
) -> dict[str, dict[str, Any]]:
    """Every experiment of ``only``, in order, into ``out``, then REPORT.md / report.html: {name: its JSON}."""
    from ..report import write_report

    results = {name: run_experiment(name, out, seed, progress, size) for name in experiment_order(only)}
    write_report(out)
    return results


__all__ = ["EXPERIMENTS", "SIZES", "check_size", "experiment_order", "run_experiment", "run_reproduce"]
