"""Decode once: an image dataset's images at their working resolution, as (n, 3, H, W) uint8, decoded a single
time and then read by every epoch, evaluation, phase (XRM -> MAT) and sweep run.

Where the array lives (``DECODE_CACHES``):

- ``auto`` (default): in memory when it fits ``budget`` bytes (default: a quarter of the machine's memory, at most
  8 GiB); above ``DISK_FROM`` bytes it is also written to the cache folder so that other processes (sweep runs,
  Slurm jobs on the same node, a rerun) read it instead of decoding again; above the budget it stays memory-mapped.
- ``memory``: in memory, never written.  ``disk``: always written, memory-mapped.  ``off``: no cache (every batch
  decodes its files, as before; for datasets larger than the disk).

A disk cache is keyed by the image folder, the file list with every file's size and mtime, and the transform:
change any of them and it is decoded again (a stale file is never read). Files are written to a temporary name
and renamed, so two processes decoding at once cannot leave a torn cache. The uint8 array holds exactly what
``ImageDataset`` would feed its ``to_normalized_array`` (the transformed PIL image), so batches normalised from it
equal batches decoded from disk bit for bit in float32 (``normalize_images``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...lazy import lazy_module

torch = lazy_module("torch")

DECODE_CACHES = ("auto", "memory", "disk", "off")
DISK_FROM = 256 * 2**20  # smaller arrays decode in seconds: not worth a file in the user's cache folder
FORMAT = 1  # bump when the layout of a cache file changes


def default_budget() -> int:
    """Bytes of decoded images kept in memory: a quarter of physical memory, at most 8 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(min(8 * 2**30, total // 4))


def check_decode_cache(mode: str) -> str:
    if mode not in DECODE_CACHES:
        raise ConfigError(f"--decode-cache must be one of {', '.join(DECODE_CACHES)}, got {mode!r}")
    return mode


def cache_key(image_dir: Path, files: Sequence[str], transform_id: str) -> str:
    """sha256 of the folder, every file's name, size and mtime (ns), and the transform: what the pixels depend on."""
    digest = hashlib.sha256(f"{FORMAT}\0{Path(image_dir).resolve()}\0{transform_id}\0".encode())
    for name in files:
        st = os.stat(Path(image_dir) / name)
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


class DecodedImages:
    """(n, 3, H, W) uint8 images; ``gather(rows)`` -> a (b, 3, H, W) uint8 tensor. ``where`` says 'memory' or the
    memory-mapped file; ``seconds`` how long decoding (or reading the cache file) took."""

    def __init__(self, array: np.ndarray, where: str, seconds: float):
        self.array, self.where, self.seconds = array, where, seconds

    def __len__(self) -> int:
        return len(self.array)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def gather(self, rows: np.ndarray) -> Any:
        """(b,) int64 row indices -> (b, 3, H, W) uint8 tensor (a copy: the cache itself is never handed out)."""
        return torch.from_numpy(np.take(self.array, rows, axis=0))


def decode_into(
    out: np.ndarray, decode_one: Callable[[int], np.ndarray], workers: int, progress: Callable[[int], None] | None
) -> None:
    """Fills ``out[i] = decode_one(i)`` for every row, on ``workers`` threads (PIL decoding releases the GIL)."""
    n = len(out)
    chunk = 256

    def fill(start: int) -> int:
        stop = min(n, start + chunk)
        for i in range(start, stop):
            out[i] = decode_one(i)
        return stop - start

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done in pool.map(fill, range(0, n, chunk)):
            if progress is not None:
                progress(done)


def build_decoded(
    n: int,
    shape: tuple[int, int, int],
    decode_one: Callable[[int], np.ndarray],
    key: Callable[[], str],
    mode: str = "auto",
    budget: int | None = None,
    folder: Path | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> DecodedImages:
    """Decodes ``n`` images of ``shape`` (3, H, W) with ``decode_one(i)`` -> uint8 array, once; see the module
    docstring for ``mode``. ``key()`` names the disk cache (computed only when a file is used)."""
    import time

    t0 = time.perf_counter()
    nbytes = n * int(np.prod(shape))
    budget = default_budget() if budget is None else int(budget)
    to_disk = mode == "disk" or (mode == "auto" and nbytes > DISK_FROM)
    if not to_disk:
        out = np.empty((n, *shape), dtype=np.uint8)
        decode_into(out, decode_one, workers, progress)
        return DecodedImages(out, "memory", time.perf_counter() - t0)
    if folder is None:
        raise ConfigError("a disk cache of decoded images needs a cache folder")
    path = folder / f"{key()}.npy"
    meta_path = path.with_suffix(".json")
    if not cached_file_fits(path, meta_path, (n, *shape)):
        try:
            write_cache_file(path, meta_path, n, shape, decode_one, workers, progress)
        except OSError as e:  # a read-only or full cache folder: say which, and what to do, in one line
            raise ConfigError(
                f"decoded-image cache {path}: cannot write it ({e.strerror or type(e).__name__}; "
                f"{n * int(np.prod(shape)) / 2**30:.2f} GiB): free space, set MEMAWARE_CACHE_DIR to another folder, "
                "or pass --decode-cache memory"
            ) from None
    elif progress is not None:
        progress(n)
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    if mode == "auto" and nbytes <= budget:
        return DecodedImages(np.ascontiguousarray(mapped), "memory", time.perf_counter() - t0)
    return DecodedImages(mapped, str(path), time.perf_counter() - t0)


def write_cache_file(
    path: Path, meta_path: Path, n: int, shape: tuple[int, int, int], decode_one: Callable[[int], np.ndarray],
    workers: int, progress: Callable[[int], None] | None,
) -> None:  # fmt: skip
    """Decodes into a temporary file, renames it to ``path`` (two processes decoding at once cannot leave a torn
    file) and then writes the sidecar that marks it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *shape))
        decode_into(out, decode_one, workers, progress)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta_path.write_text(json.dumps({"format": FORMAT, "shape": [n, *shape]}))


def cached_file_fits(path: Path, meta_path: Path, shape: tuple[int, ...]) -> bool:
    """Whether a finished cache file of ``shape`` is there (its sidecar is written after the rename)."""
    if not (path.is_file() and meta_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return meta.get("format") == FORMAT and tuple(arr.shape) == tuple(shape) and arr.dtype == np.uint8


# ImageNet mean and std per device: copying them to a GPU for every batch would be a blocking copy, a
# synchronisation that stops the host from running ahead of the GPU
IMAGENET_STATS: dict[str, tuple[Any, Any]] = {}


def imagenet_stats(device: Any) -> tuple[Any, Any]:
    """(mean, std) as (1, 3, 1, 1) float32 tensors on ``device``, made once per device."""
    from .common import IMAGENET_MEAN, IMAGENET_STD

    key = str(device)
    if key not in IMAGENET_STATS:
        IMAGENET_STATS[key] = tuple(
            torch.as_tensor(v, device=device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD)
        )
    return IMAGENET_STATS[key]


def normalize_images(images: Any, normalize: str) -> Any:
    """(b, 3, H, W) uint8 tensor (any device) -> float32 scaled to [0, 1] and, for ``imagenet``, normalised with the
    ImageNet mean and std: the arithmetic of ``common.to_normalized_array``, so the result is the same to the bit."""
    x = images.float() / 255.0
    if normalize == "imagenet":
        mean, std = imagenet_stats(x.device)
        x = (x - mean) / std
    return x


__all__ = ["DECODE_CACHES", "DecodedImages", "build_decoded", "cache_key", "check_decode_cache", "default_budget",
           "normalize_images"]  # fmt: skip
