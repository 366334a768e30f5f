"""Atomic writing of results: a reader never sees a half-written file (temp file + rename)."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
FULL_BELOW = 1 << 20  # bytes free under which a failed write is taken for a full disk


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any file
        os.replace(tmp_path, path)
    except BaseException as e:
        full = isinstance(e, Exception) and disk_full(e, path.parent)  # measured before the partial file goes
        tmp_path.unlink(missing_ok=True)  # the file at ``path`` (the last good checkpoint) stays as it was
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    return path


def disk_full(e: BaseException, folder: Path) -> bool:
    """Whether a failed write was the disk filling up: ENOSPC, or a writer that hides it (torch.save's zip writer
    says 'unexpected pos 128 vs 0') on a file system with less than 1 MiB left."""
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_BELOW


def _jsonable(obj: Any) -> Any:
    """Converts numpy / torch scalars and arrays to plain Python; non-finite floats become None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return _atomic_write(path, lambda p: p.write_text(text), ".json")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Saves a matplotlib figure as PNG atomically."""
    return _atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png"), ".png")


def atomic_writer(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Runs ``write(tmp_path)`` and renames the temp file onto ``path``."""
    return _atomic_write(path, write, suffix)
