"""A run folder is memaware's only where memaware wrote: ``.memaware-run.json`` (the folder's record) lists the
files a run writes there, with the fingerprints of its data and settings; only those are ever removed, a user's
own files never. ``.lock`` (an exclusive ``flock``, released by the kernel when its process dies) keeps a second
process out of a folder while a run or a sweep uses it; the process id written in it names the holder, and a lock
left by a process that has ended is taken over with a note."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import write_json
from .errors import ConfigError

RECORD, LOCK = ".memaware-run.json", ".lock"
# every name a run writes (runner.write_run_files, engine.checkpoint); results.json last, meaning "finished"
OUTPUTS = (
    "results.json", "results.previous.json", "evaluations.npz", "inferred_groups.npz", "heldout_logits.npz",
    "model.pt", "error.txt",
)  # fmt: skip
_CHECKPOINT = re.compile(r"checkpoint(\.[A-Za-z0-9_-]+)*\.pt")


def is_checkpoint_name(name: str) -> bool:
    """``checkpoint.pt`` or a phase's ``checkpoint.<phase>.pt``; never a user's ``checkpoint_resnet50_epoch90.pt``."""
    return _CHECKPOINT.fullmatch(name) is not None


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoints memaware writes in ``folder`` (the run's own and its phases')."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_checkpoint_name(p.name) and p.is_file())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """An exclusive, non-blocking lock on ``folder/.lock`` holding the owner's process id. Where locks are
    unavailable (no fcntl, a file system without locks) it always succeeds. ``stale``: the id of a dead process
    whose lock was taken over (None otherwise)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        self.fd: int | None = None
        self.stale: int | None = None
        self.noted = False  # the take-over was said (``stale_note``); else the next owner is told
        self.holder: int | None = None

    def _read_pid(self, fd: int) -> int | None:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        except OSError:
            return None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # not POSIX
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.holder = self._read_pid(fd)
            os.close(fd)
            return False
        except OSError:  # e.g. ENOLCK on a network file system: no locking there
            os.close(fd)
            return True
        previous = self._read_pid(fd)
        if previous is not None and previous != os.getpid() and not _alive(previous):
            self.stale = previous
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the id
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # no id left behind: the next owner sees a clean release ...
                if self.stale is not None and not self.noted:  # ... unless it must still hear of the dead one
                    os.pwrite(self.fd, f"{self.stale}\n".encode(), 0)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


@dataclass
class FolderState:
    """What a folder holds: ``kind`` is empty, finished (a readable results.json), damaged (an unreadable one) or
    unfinished (checkpoints or partial outputs); ``files``: memaware's files present."""

    kind: str
    files: list[Path]

    def describe(self) -> str:
        names = ", ".join(p.name for p in self.files[:4]) + (" ..." if len(self.files) > 4 else "")
        return {
            "finished": f"a finished run ({names})",
            "damaged": f"a run whose results.json cannot be read ({names})",
            "unfinished": f"an unfinished run ({names})",
        }.get(self.kind, "nothing of memaware's")


def read_results(path: Path) -> dict | None:
    """results.json as a dict, or None when it is missing, truncated, not a run's record, or names an evaluation
    log (``evaluation_log``) that is no longer beside it: such a run is damaged, and trained again by a sweep."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    readable = isinstance(doc, dict) and "method" in doc
    if not readable or not ("test" in doc or "criteria" in doc or isinstance(doc.get("selection"), dict)):
        return None
    if expects_evaluation_log(doc) and not (path.parent / "evaluations.npz").is_file():
        return None
    return doc


def expects_evaluation_log(results: dict) -> bool:
    """Whether the run that wrote ``results`` wrote an ``evaluations.npz`` beside it: its ``evaluation_log``, or
    for records older than that key, criteria computed by a version that logged them (it also wrote
    ``criteria_not_computable``; a run selected by 'last' has no criteria and no log)."""
    if "evaluation_log" in results:
        return bool(results["evaluation_log"])
    return bool(results.get("criteria")) and "criteria_not_computable" in results


class RunFolder:
    """One run's folder: its record, its state, and the removal of memaware's own files in it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def record_path(self) -> Path:
        return self.path / RECORD

    def record(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.record_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return doc if isinstance(doc, dict) else None

    def owned(self) -> list[Path]:
        """memaware's files present: those its record lists, else (a folder written before records were kept)
        the names memaware writes."""
        if not self.path.is_dir():
            return []
        rec = self.record()
        if rec is None:  # an earlier version's run folder holds its results.json or a checkpoint; else all is yours
            ckpts = checkpoint_files(self.path)
            if not ckpts and not (self.path / "results.json").is_file():
                return []
            return sorted({*ckpts, *(p for p in (self.path / n for n in OUTPUTS) if p.is_file())})
        names = [n for n in rec.get("files", []) if isinstance(n, str) and "/" not in n]
        return sorted(p for p in (self.path / n for n in names) if p.is_file())

    def state(self) -> FolderState:
        files = self.owned()
        if not files:
            return FolderState("empty", [])
        results = self.path / "results.json"
        if results.is_file():
            return FolderState("finished" if read_results(results) else "damaged", files)
        return FolderState("unfinished", files)

    def foreign(self, names: Iterable[str]) -> list[str]:
        """Of ``names`` (what a run is about to write), those present here that memaware did not write."""
        owned = {p.name for p in self.owned()}
        return [n for n in names if n not in owned and (self.path / n).exists()]

    def clear(self) -> list[Path]:
        """Removes memaware's own files (never the lock, never a user's file) and returns them."""
        removed = self.owned()
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def begin(self, names: Iterable[str], facts: dict[str, Any]) -> None:
        """Writes the record of a run about to start: the files it writes here and ``facts`` (fingerprints)."""
        rec = self.record() or {}
        files = sorted(set(rec.get("files", [])) | set(names))
        write_json(self.record_path, {"schema": "memaware.run/1", **facts, "files": files,
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip


def lock_or_refuse(folder: Path, what: str) -> FolderLock:
    """The folder's lock, or a ``ConfigError`` naming the process that holds it. A lock taken over from a dead
    process is said by ``stale_note`` once the command goes on (a refused command says its one line only)."""
    lock = FolderLock(folder)
    if not lock.acquire():
        holder = f" (process {lock.holder})" if lock.holder else ""
        raise ConfigError(
            f"{what} {folder} is in use by another memaware process{holder}; wait for it to end or use another folder"
        )
    return lock


def stale_note(lock: FolderLock, note: Callable[[str], None] | None = None) -> None:
    """The note that ``lock`` was taken over from a process that ended without releasing it, if it was."""
    if lock.stale is not None:
        lock.noted = True
        (note or (lambda s: print(s, file=sys.stderr)))(
            f"note: {lock.path.parent}: took over the lock of process {lock.stale}, which ended without releasing it"
        )


__all__ = ["RECORD", "LOCK", "OUTPUTS", "FolderLock", "FolderState", "RunFolder", "checkpoint_files",
           "is_checkpoint_name", "lock_or_refuse", "read_results", "stale_note", "expects_evaluation_log"]  # fmt: skip
