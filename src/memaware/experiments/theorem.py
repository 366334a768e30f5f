"""Theorem 2.2 phase diagram (``memaware theorem``): exact logistic ERM on Setup 2.1 over a grid of noise levels sigma
and noise dimensions d, measured against the Appendix F fixed point; writes theorem.json and phase.png."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..artifacts import write_json
from ..plots.theorem import plot_phase
from ..theory.fixed_point import boundary_sigma2_d
from ..theory.sweep import SweepConfig, agreement, run_sweep


def run_theorem(cfg: SweepConfig, out: str | Path, quiet: bool = True) -> dict:
    """Runs the sweep, writes theorem.json and phase.png into ``out``; returns the JSON object."""
    from tqdm import tqdm  # noqa: PLC0415 - keep `memaware --help` fast

    cfg.validate()
    start = time.perf_counter()
    total = len(cfg.sigmas) * len(cfg.dims) * cfg.seeds
    with tqdm(total=total, desc="cells", disable=quiet or not sys.stderr.isatty(), leave=False) as bar:
        cells = run_sweep(cfg, progress=bar.update)
    c_star = boundary_sigma2_d(cfg.n, cfg.gamma, cfg.rho, cfg.lam, jitter=cfg.jitter)
    result = {
        "cells": cells,
        "agreement": agreement(cells),
        "seconds": time.perf_counter() - start,
        "config": {"n": cfg.n, "gamma": cfg.gamma, "rho": cfg.rho, "lambda": cfg.lam,
                   "sigmas": list(cfg.sigmas), "dims": list(cfg.dims), "seeds": cfg.seeds, "seed": cfg.seed,
                   "n_test": cfg.n_test, "jitter": cfg.jitter, "observed_threshold": 0.9},
        # predicted boundary: the curve sigma^2 d = sigma2_d; the theorem's: d = m gamma^2 / sigma^2
        "boundary": {"sigma2_d": c_star, "m_gamma2": cfg.rho * cfg.n * cfg.gamma**2},
    }
    out = Path(out)
    plot_phase(result, out / "phase.png")
    result["seconds"] = time.perf_counter() - start
    write_json(out / "theorem.json", result)
    return result


__all__ = ["run_theorem"]
