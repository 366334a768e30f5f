"""Memorization audit (paper Appendix B.2, Fig. 2): per-example memorization scores of the training split
(eq. 8 with j = i) for ERM and MAT, summarised per group (y, a). Writes DIR/scores.npz (per-example scores,
standard errors where the estimator has them, the 1 - p(y|x) baseline where it trains a full-data model, y, a,
group), DIR/memorization.json (per method and group: n, mean, median, quantiles, fraction above 0.5; what the
estimator targets) and DIR/fig2.png, and prints an audit with a warning when a minority group is memorized far
more than its majority. Estimators: subsample (held-in minus held-out over K random halves), trak (TRAK
self-influence over M models), newton / loo / influence (L2-logistic heads, need --weight-decay > 0)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_writer, write_json
from ..data import TRAIN, load_npz
from ..engine import OPTIMIZERS, TrainConfig
from ..errors import ConfigError
from ..memorization.scores import AUDIT_METHODS, TARGETS, MemorizationScores

SCHEMA = "memaware.memorization/1"
LINEAR_DEFAULT_WD = 1e-3


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in methods if m not in AUDIT_METHODS]
    if not methods or bad or len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(
            f"--methods takes distinct comma-separated names from {', '.join(AUDIT_METHODS)}, got '{text}'"
        )
    return methods


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_common, hidden_widths

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help=".npz file with x (n, d), y (n,), split (n,) and a (n,) (group attribute)")
    src.add_argument("--dataset", help="a real dataset by name (loaders not available yet: use --data)")
    p.add_argument("--data-dir", help="root folder of --dataset")
    p.add_argument("--methods", type=_methods, default=("erm", "mat"), help="comma-separated: erm, mat")
    p.add_argument("--estimator", choices=tuple(TARGETS), default="subsample", help="memorization estimator")
    add_common(p)
    p.add_argument("--num-models", type=int, default=None,
                   help="K half-models (subsample, even; default 32) or M models (trak; default 5)")
    p.add_argument("--epochs", type=int, default=1000, help="training epochs per model (MAT: per phase)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimiser")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"L2 weight decay (default 0; {LINEAR_DEFAULT_WD:g} for newton / loo / influence)")
    p.add_argument("--batch-size", type=int, default=0, help="mini-batch size; 0 = full batch (batched models)")
    p.add_argument("--hidden", type=hidden_widths, default=(), help="MLP hidden widths, e.g. 64 (default: linear head)")
    p.add_argument("--bias", action="store_true", help="give the output head a bias")
    p.add_argument("--temperature", type=float, default=0.1, help="MAT temperature on held-out logits")
    p.add_argument("--proj-dim", type=int, default=None, help="trak projection dimension k (default min(512, rank/2))")
    p.add_argument("--trak-lambda", type=float, default=0.0, help="trak ridge lambda on Phi^T Phi (0 = TRAK's own)")
    p.add_argument("--trak-params", default="all", help="trak gradient parameters: all, head, or a name prefix")
    p.add_argument("--warn-gap", type=float, default=0.1,
                   help="warn when a minority group's mean score exceeds its majority's by this much")


def _config(args: argparse.Namespace) -> TrainConfig:
    wd = args.weight_decay
    if wd is None:
        wd = LINEAR_DEFAULT_WD if args.estimator in ("newton", "loo", "influence") else 0.0
    return TrainConfig(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
                       weight_decay=wd, batch_size=args.batch_size, seed=args.seed, selection="last")


def run_audit(data, methods: tuple[str, ...], estimator: str, cfg: TrainConfig, out: str | Path,
              source: str, warn_gap: float = 0.1, progress: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Scores every method, writes scores.npz, memorization.json and fig2.png into ``out``; returns the JSON."""
    from ..memorization.audit import gap_change, summarize, warnings_for
    from ..memorization.estimate import estimate
    from ..memorization.plots import plot_fig2

    t0 = time.perf_counter()
    out = Path(out)
    idx = data.indices(TRAIN)
    y, a = data.y[idx].numpy(), data.a[idx].numpy()
    results: dict[str, MemorizationScores] = {}
    for m in methods:
        results[m] = estimate(data, m, estimator, cfg, progress=progress, **kwargs)
    per_method, warnings = {}, []
    for m, r in results.items():
        summ = summarize(r.scores, y, a, data.num_attrs)
        entry = {**r.describe(), **summ}
        if r.baseline is not None:
            base = summarize(r.baseline, y, a, data.num_attrs)
            entry["baseline_1_minus_p"] = {"overall_mean": base["overall"]["mean"],
                                           "group_means": {g: s["mean"] for g, s in base["groups"].items()}}
        per_method[m] = entry
        warnings += warnings_for(m, summ, warn_gap)
    first = next(iter(results.values()))
    result = {
        "schema": SCHEMA, "estimator": estimator, "target": first.target, "units": first.units,
        "data": {"source": source, "n_train": len(idx), "dim": data.dim, "num_classes": data.num_classes,
                 "num_attrs": data.num_attrs},
        "methods": per_method,
        "audit": {"warnings": warnings, "warn_gap": warn_gap, "gap_change": gap_change(per_method),
                  "no_attributes": bool((a < 0).all()),
                  "most_memorized": {m: max(e["groups"], key=lambda g, e=e: e["groups"][g].get("mean", -np.inf))
                                     for m, e in per_method.items()}},
    }
    _write_scores(out / "scores.npz", results, idx.numpy(), y, a, data.num_attrs)
    plot_fig2({m: r.scores for m, r in results.items()}, y, a, data.num_attrs, out / "fig2.png",
              xlabel=f"{estimator} score")
    result["seconds"] = time.perf_counter() - t0
    write_json(out / "memorization.json", result)
    return result


def _write_scores(path: Path, results: dict[str, MemorizationScores], index: np.ndarray, y: np.ndarray,
                  a: np.ndarray, num_attrs: int) -> None:
    from ..memorization.audit import group_ids

    arrays: dict[str, np.ndarray] = {"index": index.astype(np.int64), "y": y, "a": a,
                                     "group": group_ids(y, a, num_attrs)[0].astype(np.int64),
                                     "estimator": np.array(next(iter(results.values())).estimator)}
    for m, r in results.items():
        arrays[f"score_{m}"] = r.scores.astype(np.float64)
        if r.se is not None:
            arrays[f"se_{m}"] = r.se.astype(np.float64)
        if r.baseline is not None:
            arrays[f"baseline_{m}"] = r.baseline.astype(np.float64)
        for k, v in r.extra.items():
            arrays[f"{k}_{m}"] = np.asarray(v, dtype=np.float64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_writer(path, write, ".npz")


def run(args: argparse.Namespace) -> int:
    from ..memorization.audit import audit_text

    if args.dataset is not None:
        raise ConfigError(
            f"--dataset {args.dataset}: real-dataset loaders are not available yet; extract features into an .npz "
            "(keys x, y, split, a) and pass --data FILE.npz"
        )
    if args.data_dir is not None:
        raise ConfigError("--data-dir goes with --dataset; with --data give the .npz path only")
    if args.num_models is not None and args.num_models < 1:
        raise ConfigError(f"--num-models must be >= 1, got {args.num_models}")
    if args.warn_gap < 0:
        raise ConfigError(f"--warn-gap must be >= 0, got {args.warn_gap}")
    data = load_npz(args.data)
    cfg = _config(args)
    result = run_audit(
        data, args.methods, args.estimator, cfg, args.out, str(args.data), args.warn_gap, progress=not args.quiet,
        num_models=args.num_models, model_kwargs={"hidden": args.hidden, "bias": args.bias},
        temperature=args.temperature, proj_dim=args.proj_dim, trak_lambda=args.trak_lambda,
        trak_params=args.trak_params,
    )
    if not args.quiet:
        print(audit_text(result, str(args.out)))
    return 0
