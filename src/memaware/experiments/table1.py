"""Paper Table 1 on the offline analogues of its four benchmarks (``memaware reproduce --only table1``).

Each analogue is built from files installed packages ship (``memaware.data.benchmarks``), written as an ``.npz``
into ``OUT/table1/data/``, swept with every registered Table-1 method (a random search over ``n_hparams``
combinations x ``seeds``, the runs of a method trained as members of one batched program) into
``OUT/table1/sweeps/<analogue>/``, and reported under two selection criteria: ``val_wga`` (validation groups known)
and ``val_gi_wga`` (no group label anywhere: XRM-inferred validation groups). Outputs beside the other figures:
``table1_<criterion>.md`` / ``.png`` and ``table1.json``.

The analogues and their protocols:

=============  ==========================================  ===================================================
column         analogue of (built as)                      protocol
=============  ==========================================  ===================================================
fashionbirds   Waterbirds (hard pair, EfficientNet-Lite0)  features family, 50 epochs (BENCHMARKS.md's sweep)
fashionceleba  CelebA (Fashion-MNIST on dark / bright      features family, 10 epochs (ERM's best checkpoints
               backdrops with grain; memorization regime)  are within them at 30 too; the budget)
adult          CelebA (UCI Adult x sex; the paper's Case   features family (Adam, batch 128, 30 epochs)
               1: no memorization, a control)
finefoods      MultiNLI (reviews x negation; MiniLM when   features family
               installed, else TF-IDF: said in the JSON)
setup21        the paper's Setup 2.1 (sigma = 0.5)         the paper's: full-batch SGD lr 1e-2, 1000 epochs,
                                                           no bias, no weight decay
=============  ==========================================  ===================================================

Sizes (``SIZES``): ``quick`` (the default of ``memaware reproduce``) is chosen so that the whole reproduction fits in
about ten minutes on two CPU cores; ``full`` is BENCHMARKS.md's sweep (10 combinations x 3 seeds);
``smoke`` is a seconds-long check of the pipeline on a few per cent of every dataset (its numbers mean nothing).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import atomic_writer, write_json
from ..errors import ConfigError

SCHEMA = "memaware.table1/1"
CRITERIA = ("val_wga", "val_gi_wga")
METHODS = ("erm", "groupdro", "subg", "rwg", "jtt", "xrm", "mat", "lc", "ula", "xrm-groupdro", "dfr")
ANALOGUES = ("fashionbirds", "fashionceleba", "adult", "finefoods", "setup21")
PAPER_DATASET = {"fashionbirds": "Waterbirds", "fashionceleba": "CelebA", "adult": "CelebA", "finefoods": "MultiNLI",
                 "setup21": "Setup 2.1"}  # fmt: skip
# the paper's protocol for Setup 2.1 (Fig. 1's training): what makes its linear heads memorize
SETUP21_PROTOCOL = {"optimizer": "sgd", "lr": 0.01, "batch_size": 0, "epochs": 1000, "bias": False,
                    "weight_decay": 0.0}  # fmt: skip


@dataclass(frozen=True)
class Table1Size:
    """How big the Table-1 sweep is. ``scale`` keeps that fraction of every benchmark group (1.0: the whole
    benchmark); ``setup21`` overrides (n_hparams, seeds, epochs) for Setup 2.1, whose 1000 full-batch epochs on
    1800 dimensions cost the most per run."""

    n_hparams: int
    seeds: int
    scale: float = 1.0
    dfr_retrains: int = 5
    fashionbirds_epochs: int = 50
    fashionceleba_epochs: int = 10
    features_epochs: int | None = None  # None: the features family's default (30)
    setup21: tuple[int, int, int] = (2, 2, 1000)
    analogues: tuple[str, ...] = ANALOGUES
    extra: dict[str, Any] = field(default_factory=dict)


SIZES: dict[str, Table1Size] = {
    # 3 combinations (the defaults + 2 draws) x 2 seeds on the benchmarks: measured to fit the reproduction's budget
    "quick": Table1Size(n_hparams=3, seeds=2, setup21=(2, 2, 1000)),
    "full": Table1Size(n_hparams=10, seeds=3, setup21=(10, 3, 1000)),
    "smoke": Table1Size(n_hparams=1, seeds=1, scale=0.03, fashionbirds_epochs=2, features_epochs=2,
                        fashionceleba_epochs=2, setup21=(1, 1, 20), extra={"setup21_n": 100}),
}  # fmt: skip


def get_size(size: str | Table1Size) -> Table1Size:
    """A size by name (``SIZES``) or as given."""
    if isinstance(size, Table1Size):
        return size
    if size not in SIZES:
        raise ConfigError(f"unknown size '{size}'; choose from {', '.join(SIZES)}")
    return SIZES[size]


def minilm_available() -> bool:
    """Whether FineFoods can use its default MiniLM embeddings (the ``minilm`` extra), found without importing it."""
    from ..data.benchmarks.text import MINILM_PACKAGE

    return all(importlib.util.find_spec(m) is not None for m in (MINILM_PACKAGE, "sentence_transformers"))


def build_analogue(name: str, size: Table1Size, seed: int = 0, progress: bool = False):
    """(GroupData, description) of analogue ``name`` at ``size``'s scale."""
    from ..data.benchmarks import build_benchmark
    from ..data.synthetic import make_setup21

    scale = {} if size.scale >= 1.0 else {"scale": size.scale}
    if name == "fashionbirds":
        data = build_benchmark("fashionbirds", seed=seed, pair="hard", progress=progress, **scale)
        return data, "FashionBirds hard pair, 160 px renders -> 1280 EfficientNet-Lite0 features"
    if name == "fashionceleba":
        data = build_benchmark("fashionceleba", seed=seed, **scale)
        return data, "Fashion-MNIST footwear vs tops on a dark or bright backdrop with grain, 36 px -> 1296 pixels"
    if name == "adult":
        return build_benchmark("adult-sex", seed=seed, **scale), "UCI Adult, y = income > 50K, a = female"
    if name == "finefoods":
        features = "minilm" if minilm_available() else "tfidf"
        data = build_benchmark("finefoods-negation", seed=seed, features=features, **scale)
        note = "" if features == "minilm" else " (MiniLM not installed: pip install 'memaware[minilm]')"
        return data, f"FineFoods reviews x negation, {features} features{note}"
    if name == "setup21":
        n = int(size.extra.get("setup21_n", 1000))
        return make_setup21(n_train=n, n_val=n, n_test=n, sigma=0.5, seed=seed), "Setup 2.1, sigma = 0.5, d = 1800"
    raise ConfigError(f"unknown Table-1 analogue '{name}'; choose from {', '.join(ANALOGUES)}")


def sweep_settings(name: str, size: Table1Size) -> tuple[int, int, dict[str, Any]]:
    """(n_hparams, seeds, fixed hyper-parameters) of analogue ``name``'s sweep."""
    fixed: dict[str, Any] = {"retrains": size.dfr_retrains}
    if name == "setup21":
        n_hparams, seeds, epochs = size.setup21
        return n_hparams, seeds, {**fixed, **SETUP21_PROTOCOL, "epochs": epochs}
    if name == "fashionbirds":
        fixed["epochs"] = size.fashionbirds_epochs
    elif name == "fashionceleba":
        fixed["epochs"] = size.fashionceleba_epochs
    elif size.features_epochs is not None:
        fixed["epochs"] = size.features_epochs
    return size.n_hparams, size.seeds, fixed


def run_table1(
    out: str | Path,
    seed: int = 0,
    size: str | Table1Size = "quick",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Builds every analogue, sweeps it, writes the tables and table1.json into ``out``; returns the JSON object.

    Finished runs are kept: the same call on the same ``out`` resumes (or just re-reports) the sweep."""
    from ..sweep import DataSource, plan_sweep, run_sweep
    from .premise import measure_premise, premise_summary

    sz = get_size(size)
    out = Path(out)
    root = out / "table1"
    say = log or (lambda _line: None)
    t0 = time.perf_counter()
    analogues: dict[str, Any] = {}
    sweep_dirs = []
    for name in sz.analogues:
        t_data = time.perf_counter()
        data, description = build_analogue(name, sz, seed=seed, progress=progress)
        path = data.save_npz(root / "data" / f"{name}.npz")
        data_seconds = time.perf_counter() - t_data
        n_hparams, seeds, fixed = sweep_settings(name, sz)
        sweep_dir = root / "sweeps" / name
        runs = plan_sweep([DataSource.from_npz(path)], METHODS, n_hparams, range(seeds), sweep_dir, fixed=fixed)
        t_sweep = time.perf_counter()
        summary = run_sweep(runs, sweep_dir, jobs=1, vectorized=True, progress=progress, info={"fixed": fixed})
        if not summary.complete:
            first = summary.failed[0] if summary.failed else ("?", "unfinished")
            raise ConfigError(f"table1: the {name} sweep did not finish ({first[0]}: {first[1]})")
        sweep_dirs.append(sweep_dir)
        sweep_seconds = time.perf_counter() - t_sweep
        say(f"table1: {name} ({description}): {len(runs)} runs in {sweep_seconds:.0f} s")
        premise = measure_premise(data, name, root / "premise" / name, description, seed, fixed.get("epochs"))
        say(f"table1: {name} premise (ERM train minority accuracy, memorization gap ERM -> MAT): "
            f"{premise_summary(premise)}, {premise['seconds']:.0f} s")
        analogues[name] = {
            "paper_dataset": PAPER_DATASET[name], "description": description, "n": len(data), "dim": data.dim,
            "n_hparams": n_hparams, "seeds": seeds, "fixed": fixed, "runs": len(runs),
            "data_seconds": data_seconds, "sweep_seconds": sweep_seconds, "premise": premise,
        }  # fmt: skip
    tables = write_tables(sweep_dirs, out)
    result = {
        "schema": SCHEMA, "seed": seed, "size": asdict(sz) | {"name": size if isinstance(size, str) else "custom"},
        "methods": list(METHODS), "analogues": analogues, "tables": tables, "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    write_json(out / "table1.json", result)
    return result


def write_tables(sweep_dirs: list[Path], out: Path) -> dict[str, Any]:
    """table1_<criterion>.md and .png for every criterion of ``CRITERIA``; returns {criterion: table JSON}."""
    from ..plots.table import plot_table
    from ..sweep.table import build_table
    from ..sweep.table_format import format_table, table_json
    from ..sweep.table_runs import collect_runs

    runs = collect_runs(sweep_dirs)
    tables = {}
    for criterion in CRITERIA:
        table = build_table(runs, criterion)
        text = format_table(table, "md")
        atomic_writer(out / f"table1_{criterion}.md", lambda p, text=text: p.write_text(text), ".md")
        plot_table(table, out / f"table1_{criterion}.png")
        tables[criterion] = table_json(table)
    return tables


__all__ = ["ANALOGUES", "CRITERIA", "METHODS", "PAPER_DATASET", "SIZES", "Table1Size", "build_analogue",
           "get_size", "minilm_available", "run_table1", "sweep_settings", "write_tables"]  # fmt: skip
