"""Random hyper-parameter search for paper Table 1: every method x --n-hparams combinations x --seeds, one run per
directory DIR/<method>/comb<k>_seed<s>/ (spec.json, then results.json when finished; DIR/<dataset>/<method>/...
for several datasets). Finished runs are skipped, so the same command resumes an interrupted sweep. Methods that
infer no groups get the inferred validation groups of an XRM run of their seed, trained first. DIR/sweep.json lists
every run and its status; `memaware table --sweep DIR` then makes the table. Combination 0 is each method's default;
the ranges are documented in memaware.sweep.hparams."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine import SELECTIONS
from ..errors import ConfigError
from ..methods import classifiers, is_reference
from ..sweep import EXECUTORS, DataSource, Run, SlurmOptions, describe, plan_sweep, run_sweep
from ..sweep.executors import check_executor
from ..sweep.hparams import FAMILIES, family_for, parse_override
from .common import (
    INT_MAX,
    SEED_MAX,
    add_speed_flags,
    comma_items,
    in_data,
    in_dir,
    in_path,
    int_range,
    out_dir,
    speed_options,
)

RESUME_HINT = (
    "to resume, run the same command again (finished runs are skipped, interrupted ones continue from their "
    "checkpoints)"
)
MAX_COUNT = 10_000  # seeds or combinations per method: more is a typo, and would plan that many runs


def _methods(text: str) -> tuple[str, ...]:
    # a user's method is a module:Class reference (case kept); registered names are matched case-insensitively
    methods = tuple(m if is_reference(m) else m.lower() for m in comma_items(text, "--methods"))
    bad = [m for m in methods if not is_reference(m) and m not in classifiers()]
    if not methods or bad or len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(
            f"--methods takes distinct comma-separated names from {', '.join(classifiers())} "
            f"(or package.module:Class), got '{text}'"
        )
    return methods


def _seeds(text: str) -> tuple[int, ...]:
    """'3' -> seeds 0, 1, 2; '0,5,7' -> those seeds."""
    try:
        if "," not in text:
            n = int(text)
            if not 1 <= n <= MAX_COUNT:
                raise argparse.ArgumentTypeError(
                    f"--seeds N runs seeds 0..N-1, N from 1 to {MAX_COUNT} (or give a list, e.g. 0,3), got '{text}'"
                )
            return tuple(range(n))
        seeds = tuple(int(s) for s in comma_items(text, "--seeds"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count N >= 1 (seeds 0..N-1) or a comma-separated list, got '{text}'"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > SEED_MAX:
        raise argparse.ArgumentTypeError(f"--seeds must be distinct and between 0 and {SEED_MAX}, got '{text}'")
    return seeds


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", nargs="+", type=in_data, metavar="FILE",
        help=".npz file(s) with x, y, split and a, or your own table(s) (.csv or ImageFolder tree) trained end to end "
        "with --backbone",
    )  # fmt: skip
    src.add_argument("--dataset", nargs="+", metavar="NAME", help="named dataset(s), e.g. waterbirds celeba")
    p.add_argument("--data-dir", type=in_dir, help="root folder of --dataset")
    p.add_argument(
        "--backbone",
        help="backbone of --dataset or table runs: a catalogue name or your own package.module:name / file.py:name",
    )
    p.add_argument("--image-root", type=in_dir, help="table: folder its image paths are relative to")
    p.add_argument("--resize", choices=("stretch", "crop"), default=None, help="table with --image-size: resize policy")
    p.add_argument("--normalize", choices=("none", "imagenet"), default=None, help="table: pixel normalisation")
    p.add_argument("--weights", type=in_path, help="backbone weights file of --dataset runs (passed to the runner)")
    p.add_argument(
        "--image-size", type=int_range(1, INT_MAX), default=None,
        help="image side of --dataset image runs (default: 224)",
    )  # fmt: skip
    p.add_argument(
        "--max-length", type=int_range(1, INT_MAX), default=None,
        help="tokens kept per raw text of --dataset text runs (default: 220, the authors' CivilComments cut)",
    )  # fmt: skip
    p.add_argument(
        "--methods", type=_methods, default="erm,mat",
        help=f"comma-separated: {', '.join(classifiers())}, or package.module:Class",
    )  # fmt: skip
    p.add_argument(
        "--n-hparams", type=int_range(1, MAX_COUNT), default=10,
        help="hyper-parameter combinations per method (combination 0 is each method's defaults)",
    )  # fmt: skip
    p.add_argument("--seeds", type=_seeds, default="3", help="number of seeds (0..N-1) or a list, e.g. 0,3")
    p.add_argument(
        "--out", required=True, type=out_dir, help="sweep directory (created if missing; re-use it to resume)"
    )
    p.add_argument(
        "--family",
        choices=("auto", *FAMILIES),
        default="auto",
        help="hyper-parameter ranges: features (heads on embeddings), image, text; auto: features for --data, "
        "else by dataset name",
    )
    p.add_argument(
        "--set",
        dest="fixed",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="fix a hyper-parameter for every combination, e.g. --set epochs=200 --set hidden=256,256 (repeatable)",
    )
    p.add_argument("--selection", choices=SELECTIONS, default="auto", help="primary checkpoint criterion of each run")
    p.add_argument(
        "--no-inferred-groups",
        action="store_true",
        help="skip the XRM runs that give ERM/GroupDRO/SUBG/RWG/JTT inferred validation groups (no va_gi_wga)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="EPOCHS",
        help="checkpoint every N epochs (default: the runner's, every 30 s); a killed run resumes from it",
    )
    p.add_argument("--xrm-comb", type=int, default=0, help="XRM combination whose inferred groups the others use")
    p.add_argument(
        "--device", default=None, help="torch device of every run (default: cuda on Slurm with GPUs, else cpu)"
    )
    add_speed_flags(p.add_argument_group("end-to-end speed (a backbone on a table or --dataset)"))
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="where runs train")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at once: local worker processes (default: CPU count) or Slurm array parallelism (default 256)",
    )
    p.add_argument(
        "--vectorized",
        action="store_true",
        help="train the runs of a (method, data) together, as members of one batched program "
        "(memaware.engine.many.execute_many)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and their hyper-parameters, train nothing")
    p.add_argument(
        "--overwrite", action="store_true",
        help="train again the runs whose folders hold another spec or a run on data that changed since (memaware's "
        "files there are removed, yours never); without it such a sweep is refused",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stdout")
    s = p.add_argument_group("slurm (--executor slurm)")
    s.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    s.add_argument("--time-min", type=int, default=60, help="time limit per job in minutes (jobs requeue at it)")
    s.add_argument("--gpus", type=int, default=None, help="GPUs per job (default: 0 for features, else 1)")
    s.add_argument("--cpus", type=int, default=4, help="CPUs per job")
    s.add_argument("--mem-gb", type=float, default=32.0, help="memory per job in GB")
    s.add_argument(
        "--slurm-dir", default=None, type=out_dir, help="submitit's logs and job pickles (default: DIR/submitit)"
    )
    s.add_argument(
        "--max-requeues", type=int, default=SlurmOptions.max_requeues,
        help="times a job that reaches --time-min is requeued (its runs resume from their checkpoints)",
    )  # fmt: skip
    s.add_argument("--poll-s", type=float, default=SlurmOptions.poll_s, help="seconds between two looks at the queue")


def _sources(args: argparse.Namespace) -> list[DataSource]:
    from ..fingerprint import data_fingerprint
    if args.data:
        from ..data import load_npz
        from ..data.datasets import is_table_path

        tables = [p for p in args.data if is_table_path(p)]
        if tables:
            return _table_sources(args, tables)
        if args.data_dir or args.backbone or args.weights or args.image_size or args.max_length:
            raise ConfigError(
                "--data-dir, --backbone, --weights, --image-size and --max-length go with --dataset or a table, "
                "not an .npz"
            )
        sources = []
        for path in args.data:
            data = load_npz(path)  # a bad file fails here, with one line, before any run starts
            family = "features" if args.family == "auto" else args.family
            sources.append(DataSource.from_npz(path, family, data))
        return sources
    if not args.data_dir:
        raise ConfigError("--dataset needs --data-dir (the folder holding the dataset)")
    if not Path(args.data_dir).is_dir():
        raise ConfigError(f"--data-dir {args.data_dir}: no such directory")
    from ..data.datasets import open_dataset

    prints = [  # a bad name or layout fails here, before any run starts
        data_fingerprint(open_dataset(name.lower(), args.data_dir, image_size=args.image_size or 224))
        for name in args.dataset
    ]
    sources = [
        DataSource.from_dataset(
            name.lower(),
            args.data_dir,
            family_for(name) if args.family == "auto" else args.family,
            args.backbone,
            args.weights,
            args.image_size,
            args.max_length,
        )
        for name in args.dataset
    ]
    for source, fp in zip(sources, prints, strict=True):
        source.spec["data_fingerprint"] = fp
    return sources


def _table_sources(args: argparse.Namespace, tables: list[str]) -> list[DataSource]:
    """Users' tables: each opened and its backbone probed now (a bad one fails before any run starts)."""
    from ..data.datasets.table import table_modality
    from ..fingerprint import data_fingerprint
    from ..sweep.runner import load_spec_data, model_factory_for

    if len(tables) != len(args.data):
        raise ConfigError("--data takes .npz files or tables (.csv, ImageFolder trees), not both in one sweep")
    if args.data_dir or args.max_length:
        raise ConfigError("--data-dir and --max-length go with --dataset, not a table")
    options = {"image_size": args.image_size, "image_root": args.image_root, "resize": args.resize,
               "normalize": args.normalize}  # fmt: skip
    sources = []
    for path in tables:
        family = table_modality(path) if args.family == "auto" else args.family
        source = DataSource.from_table(path, family, args.backbone, options)
        spec = {**source.spec, "weights": args.weights, "seed": 0}
        data, dataset = load_spec_data(spec)
        model_factory_for(spec, dataset, data, bias=False)
        source.spec["data_fingerprint"] = data_fingerprint(dataset)
        if args.weights is not None:
            source.spec["weights"] = str(Path(args.weights).resolve())
        sources.append(source)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"two tables share the name '{names[0]}' (their folder's name); put them in distinct folders")
    return sources


def run(args: argparse.Namespace) -> int:
    sources = _sources(args)
    fixed = dict(parse_override(t) for t in args.fixed or [])
    check_executor(args.executor)
    gpus = args.gpus if args.gpus is not None else (0 if all(s.family == "features" for s in sources) else 1)
    if gpus < 0 or args.cpus < 1 or args.time_min < 1 or args.mem_gb <= 0:
        raise ConfigError("--gpus must be >= 0 and --cpus, --time-min, --mem-gb > 0")
    device = args.device or ("cuda" if args.executor == "slurm" and gpus > 0 else "cpu")
    if device.startswith("cuda") and args.executor == "local":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    out = Path(args.out)
    runs = plan_sweep(
        sources,
        args.methods,
        args.n_hparams,
        args.seeds,
        out,
        selection=args.selection,
        device=device,
        fixed=fixed,
        inferred_groups=not args.no_inferred_groups,
        xrm_comb=args.xrm_comb,
        checkpoint_every=args.checkpoint_every,
        options=speed_options(args),
    )
    if args.dry_run:
        print(plan_summary(runs, out.resolve()))
        return 0
    if not args.quiet:
        done = sum(r.done for r in runs)
        print(f"sweep: {len(runs)} runs ({done} already done) on {args.executor} -> {out}", flush=True)
    info = {
        "datasets": [{"name": s.name, **s.spec, "family": s.family} for s in sources],
        "methods": list(args.methods),
        "n_hparams": args.n_hparams,
        "seeds": list(args.seeds),
        "selection": args.selection,
        "fixed": fixed,
        "inferred_groups": None if args.no_inferred_groups else f"xrm comb{args.xrm_comb}",
        "command": "memaware " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["sweep"] else None,
    }
    slurm = SlurmOptions(
        partition=args.partition,
        time_min=args.time_min,
        gpus=gpus,
        cpus=args.cpus,
        mem_gb=args.mem_gb,
        folder=args.slurm_dir,
        max_requeues=args.max_requeues,
        poll_s=args.poll_s,
    )
    swept = run_sweep(
        runs,
        out,
        executor=args.executor,
        jobs=args.jobs,
        vectorized=args.vectorized,
        slurm=slurm,
        info=info,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    if not args.quiet or not swept.complete:
        print(describe(swept, out), file=sys.stdout if swept.complete else sys.stderr)
    return 0 if swept.complete else 1


def plan_summary(runs: list[Run], root: Path) -> str:
    """The dry run's listing: each run's directory, whether it is done, its hyper-parameters."""
    lines = [f"{len(runs)} runs (dry run: nothing written)"]
    for r in runs:
        hp = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.spec["hparams"].items())
        state = "done" if r.done else "todo"
        lines.append(f"  {r.rel(root):<28} {state}  {hp}")
    return "\n".join(lines)
