"""One training run from the command line's point of view (``memaware train``). Every input is checked first
(data, flags, the state to resume); only then is the run folder locked and touched. A folder that holds another
run, finished or not, is refused unless ``overwrite`` (memaware's own files there are removed, a user's never) or
``resume`` (the run continues from its checkpoint, on the same data only) says what to do; the run itself is
``memaware.sweep.runner``'s."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..engine.checkpoint import load_checkpoint
from ..errors import ConfigError
from ..fingerprint import check_same_data
from ..runfolder import RunFolder, checkpoint_files, lock_or_refuse, read_results, stale_note
from ..sweep.prepared import PreparedRun, check_resumable, prepare_run, train_prepared


def run_training(
    spec: dict[str, Any], out: str | Path, resume: bool = False, progress: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Trains the run ``spec`` (``runner.SPEC_KEYS``) in ``out`` and returns its results dict.

    ``out`` holding memaware files of another run is a ``ConfigError`` unless ``overwrite`` (they are removed once
    every input has been checked) or ``resume`` (an unfinished run continues from its checkpoint; a finished one
    on the same data and settings is returned as it is). A second process on ``out`` is refused (its lock)."""
    if resume and overwrite:
        raise ConfigError("give one of --resume (continue the run in --out) and --overwrite (start it over)")
    prep = prepare_run(spec, progress)  # every input checked before the folder is touched
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = lock_or_refuse(out, "--out")
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create or lock the folder ({e.strerror or e})") from None
    try:
        folder = RunFolder(out)
        finished = decide(folder, prep, resume, overwrite)
        if finished is not None:
            return finished
        stale_note(lock)
        folder.begin(prep.output_names(), prep.facts())
        return train_prepared(prep, out)
    finally:
        lock.release()


def decide(folder: RunFolder, prep: PreparedRun, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """What to do with what ``folder`` holds: refuse (``ConfigError``), clear it, continue it, or return a finished
    run's results (resume of a run that has ended)."""
    out, state = folder.path, folder.state()
    foreign = folder.foreign(prep.output_names())
    if foreign:
        raise ConfigError(
            f"--out {out} holds {foreign[0]}, which memaware did not write and a run would replace; move it or use "
            "another --out"
        )
    if state.kind == "empty":
        return None
    if overwrite:
        removed = folder.clear()
        print(f"note: --overwrite removed {len(removed)} file(s) of the earlier run in {out}", file=sys.stderr)
        return None
    if not resume:
        hint = "--resume to continue it or --overwrite to start over" if state.kind == "unfinished" else "--overwrite"
        raise ConfigError(f"--out {out} holds {state.describe()}; use {hint}, or another --out")
    if state.kind == "damaged":
        raise ConfigError(f"--out {out} holds {state.describe()}; nothing to resume: use --overwrite")
    check_resumable(folder, prep)
    if state.kind == "finished":
        done = read_results(out / "results.json") or {}
        recorded = done.get("fingerprint") or {}
        if "data" in recorded:
            old = (done.get("data") or {}).get("source")
            check_same_data(recorded["data"], prep.fingerprint, prep.source, f"the finished run in {out}", old)
        if recorded.get("settings", prep.facts()["settings"]) != prep.facts()["settings"]:
            raise ConfigError(f"--out {out} holds a finished run with other settings; use --overwrite or another --out")
        return done
    for path in checkpoint_files(out):  # a damaged checkpoint is answered now, not after the phases before it
        load_checkpoint(path)
    return None


__all__ = ["run_training", "decide"]
