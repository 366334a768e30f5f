"""Content fingerprints of a run's data and of the settings that shape its model.

A checkpoint, a run's ``results.json`` and a sweep's ``spec.json`` record the fingerprint of the data they were
made from, so that ``--resume`` and a sweep run again refuse a data file that changed since (another file of the
same size included) instead of mixing two datasets in one model or one table. The fingerprint of arrays is a
SHA-256 hash of each field's bytes (x, y, a, split: which one changed is named); a real dataset or a user's table
adds its metadata file's hash and, for images, each file's size and modification time (not the pixels: hashing
every image of a dataset would cost more than an epoch)."""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Any

from .errors import ConfigError

FIELDS = ("x", "y", "a", "split")
_CHUNK = 1 << 24  # hashed 16 MB at a time: no second copy of a large array in memory
# id(x) -> (weak reference to x, its version counter, fingerprint): fit's phases and the runner hash a dataset once
_CACHE: dict[int, tuple[Any, int, dict[str, Any]]] = {}


def _digest(chunks: Any) -> str:
    h = hashlib.sha256()  # with the CPU's SHA instructions, twice as fast as BLAKE2b here (~0.6 GB/s)
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:24]


def _array_chunks(arr: Any) -> Any:
    import numpy as np

    a = np.ascontiguousarray(arr.detach().cpu().numpy() if hasattr(arr, "detach") else arr)
    yield f"{a.dtype.str}{a.shape}".encode()
    flat = a.reshape(-1).view(np.uint8) if a.size else np.zeros(0, np.uint8)
    for i in range(0, flat.size, _CHUNK):
        yield memoryview(flat[i : i + _CHUNK])


def file_digest(path: str | os.PathLike) -> str:
    """The hash of a file's bytes (a metadata CSV, a table)."""

    def chunks() -> Any:
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                yield block

    return _digest(chunks())


def data_fingerprint(data: Any) -> dict[str, Any]:
    """{"n", "dim", "x", "y", "a", "split"} of a ``GroupData`` (or a dataset holding one as ``.data``), plus
    "metadata" and "files" for a real dataset or table. Cached per array until it is modified in place."""
    dataset = data if hasattr(data, "load") and hasattr(data, "data") else None
    arrays = dataset.data if dataset is not None else data
    key = dataset if dataset is not None else arrays.x  # a dataset's files are stat'ed once per opened dataset
    hit = _CACHE.get(id(key))
    version = getattr(arrays.x, "_version", 0)
    if hit is not None and hit[0]() is key and hit[1] == version:
        return dict(hit[2])
    out: dict[str, Any] = {"n": len(arrays), "dim": int(arrays.dim)}
    for name in FIELDS:
        out[name] = _digest(_array_chunks(getattr(arrays, name)))
    if dataset is not None:
        out.update(_dataset_parts(dataset))
    for dead in [k for k, v in _CACHE.items() if v[0]() is None]:  # arrays gone since: their ids may come back
        del _CACHE[dead]
    try:
        _CACHE[id(key)] = (weakref.ref(key), version, dict(out))
    except TypeError:  # not weakly referable: no cache
        pass
    return out


def _dataset_parts(dataset: Any) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    meta = getattr(dataset, "metadata_path", None)
    if meta is not None and Path(meta).is_file():
        parts["metadata"] = file_digest(meta)
    files, base = getattr(dataset, "files", None), getattr(dataset, "image_dir", None)
    if files is not None and base is not None:
        stats = []
        for name in files:
            try:
                st = os.stat(Path(base) / name)
                stats.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            except OSError:
                stats.append(f"{name}\tmissing\n".encode())
        parts["files"] = _digest(stats)
    return parts


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """The hash of the settings that shape a model (JSON, sorted keys)."""
    return _digest([json.dumps(settings, sort_keys=True, default=repr).encode()])


def what_changed(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Words for the first difference between two data fingerprints, or None when they agree."""
    if not isinstance(old, dict):
        return "no fingerprint was recorded"
    if old.get("n") != new.get("n") or old.get("dim") != new.get("dim"):
        return f"shape ({old.get('n')}, {old.get('dim')}) then, ({new.get('n')}, {new.get('dim')}) now"
    changed = [k for k in (*FIELDS, "metadata", "files") if old.get(k) != new.get(k)]
    if not changed:
        return None
    names = {"metadata": "its metadata file", "files": "its image files (names, sizes or times)"}
    said = [names.get(k, f"field '{k}'") for k in changed]
    return f"{', '.join(said)} {'differ' if len(said) > 1 else 'differs'} (same shape ({new['n']}, {new['dim']}))"


def check_same_data(old: Any, new: dict[str, Any], source: str, where: str, old_source: str | None = None) -> None:
    """Raises ``ConfigError`` naming ``source`` and what changed when ``old`` (recorded by ``where``, made from
    ``old_source``) differs."""
    diff = what_changed(old, new)
    if not diff:
        return
    if old_source is not None and old_source != source:
        said = f"{source} is not the data {where} started on ({old_source})"
    else:
        said = f"{source} changed since {where} started"
    raise ConfigError(
        f"{said}: {diff}; a run continues on the data it started on only (restore it, or start over with "
        "--overwrite / another --out)"
    )


__all__ = ["data_fingerprint", "settings_fingerprint", "file_digest", "what_changed", "check_same_data", "FIELDS"]
