"""Random hyper-parameter search (paper Table 1): methods x combinations x seeds, one directory per run.

Layout: ``DIR/<method>/comb<k>_seed<s>/`` (``DIR/<dataset>/<method>/...`` when one sweep covers several datasets).
``spec.json`` (what ``memaware.sweep.runner.execute`` trains) is written before any run starts and ``results.json``
by the run when it ends, so a directory with ``results.json`` is finished and skipped: running the same sweep again
resumes it, and a run that was killed resumes from its ``checkpoint.pt``. Methods that infer no groups of their own
(ERM, GroupDRO, SUBG, RWG, JTT) point ``inferred_groups`` at the XRM run of their seed (combination ``xrm_comb``,
default 0), which runs first, so that every run can also be selected by ``val_gi_wga``.

Executors: ``local`` (a process pool, spawn context, one intra-op torch thread per worker, ``jobs`` workers; with
``jobs=1`` the runs train one after the other in the sweep's own process),
``slurm`` (submitit's AutoExecutor: one job per run, in arrays of at most ``jobs`` running at once; a job that
reaches its time limit is requeued and resumes from its checkpoint) and ``submitit-local`` (the same code path run
on this machine by submitit's LocalExecutor). The unit of work handed to an executor is a *batch*, a list of runs
of one (method, data): one run per batch by default; with ``vectorized=True`` every run of a (method, data) forms
one batch, trained by ``memaware.engine.many.execute_many(specs, run_dirs)`` (``EXECUTE_MANY``).

``DIR/sweep.json`` (written atomically, after every finished run) lists the datasets, methods, seeds and every run
with its status: done, pending, failed, blocked (its XRM run failed) or busy (locked by another process).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .executors import RESULTS, SPEC
from .hparams import check_method, needs_inferred_groups, sample_hparams

SCHEMA = "memaware.sweep/1"
# may change between a sweep and its resumption (they change how fast a run goes, not its numbers)
IGNORED_SPEC_KEYS = ("device", "checkpoint_every", "prefetch", "decode_cache")


@dataclass(frozen=True)
class DataSource:
    """What a run trains on: ``spec`` holds the data keys of a run spec; ``name`` is the table's column."""

    name: str
    spec: dict
    family: str

    @classmethod
    def from_npz(cls, path: str | os.PathLike, family: str = "features", data: Any = None) -> DataSource:
        """An .npz of features, loaded (or ``data``, its ``GroupData`` already loaded) to fingerprint it; a file
        that does not exist yet gets no fingerprint (its runs fail with one line when they start)."""
        from ..data import load_npz
        from ..fingerprint import data_fingerprint

        p = Path(path).resolve()
        if data is None and not p.is_file():
            return cls(name=p.stem, spec={"data": str(p)}, family=family)
        fp = data_fingerprint(data if data is not None else load_npz(p))
        return cls(name=p.stem, spec={"data": str(p), "data_fingerprint": fp}, family=family)

    @classmethod
    def from_dataset(
        cls,
        name: str,
        data_dir: str | os.PathLike,
        family: str,
        backbone: str | None = None,
        weights: str | None = None,
        image_size: int | None = None,
        max_length: int | None = None,
    ) -> DataSource:
        """``image_size`` / ``max_length``: the image side / the tokens kept per text, for the runner (its defaults
        when None)."""
        spec: dict[str, Any] = {"dataset": name, "data_dir": str(Path(data_dir).resolve())}
        if backbone is not None:
            spec["backbone"] = backbone
        if image_size is not None:
            spec["image_size"] = int(image_size)
        if max_length is not None:
            spec["max_length"] = int(max_length)
        if weights is not None:
            spec["weights"] = str(Path(weights).resolve()) if Path(weights).exists() else weights
        return cls(name=name, spec=spec, family=family)


    @classmethod
    def from_table(cls, path: str | os.PathLike, family: str, backbone: str | None = None,
                   options: dict[str, Any] | None = None) -> DataSource:  # fmt: skip
        """A user's table (.csv or ImageFolder tree), trained end to end with ``backbone``; ``options``:
        image_size, image_root, resize, normalize (the runner's defaults where absent). A ``file.py:name`` backbone
        is made absolute, so that a worker started elsewhere finds it."""
        p = Path(path).resolve()
        spec: dict[str, Any] = {"data": str(p)}
        if backbone is not None:
            module, sep, attr = backbone.rpartition(":")
            spec["backbone"] = f"{Path(module).resolve()}:{attr}" if sep and module.endswith(".py") else backbone
        for key, value in (options or {}).items():
            if value is not None:
                spec[key] = str(Path(value).resolve()) if key == "image_root" else value
        return cls(name=p.stem if p.is_dir() else p.parent.name or p.stem, spec=spec, family=family)


@dataclass
class Run:
    """One training run of a sweep. ``role`` is 'groups' for an XRM run that only provides inferred groups;
    ``needs`` is the run directory whose ``results.json`` must exist first."""

    dataset: str
    method: str
    comb: int
    seed: int
    run_dir: Path
    spec: dict
    role: str = "sweep"
    needs: Path | None = None

    @property
    def done(self) -> bool:
        """A readable results.json (a damaged one is trained again)."""
        from ..runfolder import read_results

        return read_results(self.run_dir / RESULTS) is not None

    def rel(self, root: Path) -> str:
        return relative_path(self.run_dir, root)


def relative_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def run_dir_name(comb: int, seed: int) -> str:
    return f"comb{comb}_seed{seed}"


def plan_sweep(
    sources: Sequence[DataSource],
    methods: Sequence[str],
    n_hparams: int,
    seeds: Sequence[int],
    out: str | os.PathLike,
    *,
    selection: str = "auto",
    device: str = "cpu",
    fixed: dict[str, Any] | None = None,
    inferred_groups: bool = True,
    xrm_comb: int = 0,
    checkpoint_every: int | None = None,
    options: dict[str, Any] | None = None,
) -> list[Run]:
    """Every run of the sweep, XRM group-inference runs first, then combination by combination (so that a
    partial sweep already covers every method and seed). ``checkpoint_every`` (epochs) goes into each spec when
    given (the runner's default is time-based); ``options`` (end-to-end settings such as ``precision``, see
    ``cli.common.SPEED_DEFAULTS``) into every spec. Writes nothing."""
    if not sources:
        raise ConfigError("a sweep needs at least one dataset")
    if not methods:
        raise ConfigError("a sweep needs at least one method")
    for m in methods:
        check_method(m)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods lists a method twice: {','.join(methods)}")
    if n_hparams < 1:
        raise ConfigError(f"--n-hparams must be >= 1, got {n_hparams}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"seeds must be distinct and >= 0, got {list(seeds)}")
    if xrm_comb < 0:
        raise ConfigError(f"--xrm-comb must be >= 0, got {xrm_comb}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"two datasets of one sweep have the same name: {', '.join(names)}")
    out = Path(out).resolve()
    runs: list[Run] = []
    for src in sources:
        root = out if len(sources) == 1 else out / src.name
        make = functools.partial(
            _make_run, src, out, root, selection, device, fixed, checkpoint_every, options or {}
        )

        groups = inferred_groups and any(needs_inferred_groups(m) for m in methods)
        xrm_dirs: dict[int, Path] = {}
        if groups:
            role = "sweep" if "xrm" in methods and xrm_comb < n_hparams else "groups"
            for seed in seeds:
                r = make("xrm", xrm_comb, seed, role)
                xrm_dirs[seed] = r.run_dir
                runs.append(r)
        for comb in range(n_hparams):
            for seed in seeds:
                for method in methods:
                    if method == "xrm" and groups and comb == xrm_comb:
                        continue  # already planned above
                    needs = xrm_dirs.get(seed) if needs_inferred_groups(method) else None
                    runs.append(make(method, comb, seed, needs=needs))
    return runs


def _make_run(
    src: DataSource,
    sweep_root: Path,
    root: Path,
    selection: str,
    device: str,
    fixed: dict[str, Any] | None,
    checkpoint_every: int | None,
    options: dict[str, Any],
    method: str,
    comb: int,
    seed: int,
    role: str = "sweep",
    needs: Path | None = None,
) -> Run:
    hparams = sample_hparams(method, src.family, comb, seed, dataset=src.spec.get("dataset"), fixed=fixed)
    spec: dict[str, Any] = {
        "method": method,
        **src.spec,
        "seed": int(seed),
        "comb": int(comb),
        "hparams": hparams,
        "selection": selection,
        "device": device,
        **options,
    }
    folder = method.replace(":", "--")  # a user's module:Class reference makes a portable folder name
    run_dir = root / folder / run_dir_name(comb, seed)
    if needs is not None:  # relative to the run: a moved sweep folder still finds it
        spec["inferred_groups"] = os.path.relpath(needs / "inferred_groups.npz", run_dir)
    for key in ("data", "data_dir", "image_root"):  # inside the sweep folder: relative too
        if spec.get(key) and Path(spec[key]).is_relative_to(sweep_root):
            spec[key] = os.path.relpath(spec[key], run_dir)
    if checkpoint_every is not None:
        spec["checkpoint_every"] = int(checkpoint_every)
    return Run(src.name, method, comb, seed, run_dir, spec, role, needs)


def spec_path(run_dir: Path, value: str) -> Path:
    """A path of a run's spec: absolute, or relative to its run folder (what a sweep writes)."""
    path = Path(value)
    return path if path.is_absolute() else (run_dir / path).resolve()


def _spec_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first key where two specs differ (ignoring IGNORED_SPEC_KEYS at the top level), or None."""
    keys = sorted(set(old) | set(new))
    for k in keys:
        if not prefix and k in IGNORED_SPEC_KEYS:
            continue
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diff = _spec_difference(a, b, f"{prefix}{k}.")
            if diff:
                return diff
        elif a != b:
            return f"{prefix}{k}: {a!r} there, {b!r} now"
    return None


def _comparable(spec: dict, run_dir: Path) -> dict:
    """A spec as compared between a sweep and its resumption: paths made absolute from the run folder, the
    inferred groups' path left out (it follows from the plan) and the fingerprint checked on its own."""
    out = {k: v for k, v in spec.items() if k not in ("inferred_groups", "data_fingerprint")}
    for key in ("data", "data_dir", "image_root"):
        if isinstance(out.get(key), str):
            out[key] = str(spec_path(run_dir, out[key]))
    return out


def spec_conflict(r: Run) -> str | None:
    """Why ``r``'s folder holds another run (a different spec, or the same run on data whose content changed since
    its fingerprint was taken), in words, or None."""
    path = r.run_dir / SPEC
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: rewritten
    if not isinstance(old, dict):
        return None
    new = json.loads(json.dumps(r.spec))
    if "data_fingerprint" in old and "data_fingerprint" in new:
        from ..fingerprint import what_changed

        changed = what_changed(old["data_fingerprint"], new["data_fingerprint"])
        if changed:
            data = new.get("data")
            source = spec_path(r.run_dir, data) if data else f"{new.get('dataset')} in {new.get('data_dir')}"
            return (f"{source} changed since this sweep started ({changed}, from run {path.parent}); its finished "
                    "runs were trained on the old content: restore it, sweep into another --out, or --overwrite")
    diff = _spec_difference(_comparable(old, r.run_dir), _comparable(new, r.run_dir))
    if diff:
        return f"{path} was written for a different run ({diff}); use another --out, or --overwrite"
    return None


def check_specs(runs: Iterable[Run], overwrite: bool = False) -> list[Run]:
    """Raises ``ConfigError`` when a run folder already holds another run (``spec_conflict``); with ``overwrite``,
    returns those runs instead (their folders are to be cleared and trained again)."""
    conflicts = []
    for r in runs:
        why = spec_conflict(r)
        if why and not overwrite:
            raise ConfigError(why)
        if why:
            conflicts.append(r)
    return conflicts
