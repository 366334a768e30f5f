"""Paper Fig. 2 in the reproduction (``memaware reproduce --only fig2``): per-group memorization of ERM and MAT on
Setup 2.1 and on FashionBirds (the Waterbirds analogue), with the change in the minority-minus-majority gap.

Each audit is ``run_audit`` (``memaware memorization``) into ``OUT/fig2/<name>/``; its figure is copied to
``OUT/fig2_<name>.png`` and the gaps gathered in ``OUT/fig2.json``. The ``quick`` size uses the closed-form
``newton`` estimator (the leave-one-out step of an L2-logistic head: seconds, and validated against exact
leave-one-out in docs/memorization.md) on both FashionBirds pairs: the hard one (whose features the Table-1 stage
already built), where MAT fixes the worst group but leaves the task's hard examples memorized, and the easy one
(45 s more of feature extraction), where the core features solve the task and the evening-out of the paper's
Fig. 2 shows most clearly (BENCHMARKS.md). ``full`` uses the subsample estimator (16 half-models) on both pairs.
FashionBirds' heads train with the features recipe (Adam 1e-3, batch 128, 50 epochs, weight decay 1e-4, bias);
Setup 2.1's with the paper's (full-batch SGD 1e-2, 1000 epochs).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..errors import ConfigError

SCHEMA = "memaware.fig2/1"


@dataclass(frozen=True)
class Audit:
    """One Fig. 2 panel: which data, which estimator, which training recipe."""

    name: str
    data: str  # setup21 | fashionbirds-hard | fashionbirds-easy
    estimator: str
    num_models: int | None = None
    epochs: int | None = None  # None: the recipe's
    scale: float = 1.0


SIZES: dict[str, tuple[Audit, ...]] = {
    "quick": (Audit("setup21", "setup21", "newton"), Audit("fashionbirds_hard", "fashionbirds-hard", "newton"),
              Audit("fashionbirds_easy", "fashionbirds-easy", "newton")),
    "full": (
        Audit("setup21", "setup21", "newton"),
        Audit("setup21_subsample", "setup21", "subsample", num_models=8, epochs=300),
        Audit("fashionbirds_hard", "fashionbirds-hard", "subsample", num_models=16),
        Audit("fashionbirds_easy", "fashionbirds-easy", "subsample", num_models=16),
    ),
    "smoke": (Audit("setup21", "setup21", "newton", epochs=20, scale=0.1),
              Audit("fashionbirds_hard", "fashionbirds-hard", "newton", epochs=2, scale=0.03)),
}  # fmt: skip

RECIPES: dict[str, dict[str, Any]] = {
    "setup21": {"epochs": 1000, "lr": 1e-2, "optimizer": "sgd", "batch_size": 0, "bias": False},
    "fashionbirds": {"epochs": 50, "lr": 1e-3, "optimizer": "adam", "batch_size": 128, "weight_decay": 1e-4,
                     "bias": True},
}  # fmt: skip


def audit_data(spec: Audit, seed: int, progress: bool):
    """(GroupData, description) of one panel's data."""
    from ..data.benchmarks import build_benchmark
    from ..data.synthetic import make_setup21

    if spec.data == "setup21":
        n = max(20, int(round(1000 * spec.scale)))
        return make_setup21(n_train=n, n_val=n, n_test=n, sigma=0.5, seed=seed), "Setup 2.1, sigma = 0.5"
    pair = spec.data.removeprefix("fashionbirds-")
    scale = {} if spec.scale >= 1.0 else {"scale": spec.scale}
    data = build_benchmark("fashionbirds", seed=seed, pair=pair, progress=progress, **scale)
    return data, f"FashionBirds {pair} pair, EfficientNet-Lite0 features"


def run_fig2(out: str | Path, seed: int = 0, size: str = "quick", progress: bool = False) -> dict[str, Any]:
    """Every audit of ``SIZES[size]`` into ``out``; returns (and writes) fig2.json."""
    from .memorization import audit_config, run_audit
    from .premise import audit_key, find_audit

    if size not in SIZES:
        raise ConfigError(f"unknown size '{size}'; choose from {', '.join(SIZES)}")
    out = Path(out)
    t0 = time.perf_counter()
    panels: dict[str, Any] = {}
    for spec in SIZES[size]:
        data, source = audit_data(spec, seed, progress)
        recipe = dict(RECIPES["setup21" if spec.data == "setup21" else "fashionbirds"])
        if spec.epochs is not None:
            recipe["epochs"] = spec.epochs
        bias = recipe.pop("bias")
        cfg = audit_config(spec.estimator, seed=seed, **recipe)
        kwargs: dict[str, Any] = {"model_kwargs": {"hidden": (), "bias": bias}}
        if spec.num_models is not None:
            kwargs["num_models"] = spec.num_models
        # the same audit on the same data may have run as a Table-1 premise audit (Setup 2.1, the hard pair)
        done = find_audit(out / "table1" / "premise", audit_key(data, spec.estimator, cfg, bias))
        if done is not None:
            shutil.copytree(done, out / "fig2" / spec.name, dirs_exist_ok=True)
            res = json.loads((done / "memorization.json").read_text())
        else:
            res = run_audit(data, ("erm", "mat"), spec.estimator, cfg, out / "fig2" / spec.name, source,
                            progress=progress, **kwargs)  # fmt: skip
        shutil.copyfile(out / "fig2" / spec.name / "fig2.png", out / f"fig2_{spec.name}.png")
        panels[spec.name] = {
            "data": spec.data, "source": source, "estimator": spec.estimator, "num_models": spec.num_models,
            "config": {**recipe, "bias": bias, "weight_decay": cfg.weight_decay},
            "gap_change": res["audit"]["gap_change"],
            "group_means": {m: {g: s.get("mean") for g, s in e["groups"].items()} for m, e in res["methods"].items()},
            "roles": {g: s["role"] for g, s in res["methods"]["erm"]["groups"].items()},
            "warnings": len(res["audit"]["warnings"]), "seconds": res["seconds"],
            "reused": None if done is None else str(done),
        }  # fmt: skip
    result = {"schema": SCHEMA, "seed": seed, "size": size, "panels": panels, "seconds": time.perf_counter() - t0}
    write_json(out / "fig2.json", result)
    return result


__all__ = ["Audit", "RECIPES", "SIZES", "audit_data", "run_fig2"]
