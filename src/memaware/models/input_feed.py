"""Row indices -> a backbone's input on its device, with the coming batches loaded in the background.

An ``EndToEndNet`` takes (b, 1) row indices; its ``InputFeed`` turns them into the backbone's input. The engine
knows an epoch's batches when the epoch starts (and an evaluation its chunks), so it announces them
(``expect``) and a background thread loads them ``depth`` batches ahead while the current step computes: a step
then waits for data only when loading is slower than the network. Any batch nobody announced (a probe, a method's
extra forward) is loaded on the spot, so what a step sees never depends on the prefetching.

Images of an ``ImageDataset`` travel as uint8 (decoded once, ``datasets.decoded``): gathered and, on CUDA, pinned
in the background, copied without blocking, and normalised on the device (a quarter of float32's bytes over the
bus). Other datasets (texts, tokens, rendered images) are loaded by their ``load`` in the background as they are.

Why a thread and not ``DataLoader`` worker processes: with decoded images a batch is one gather from an array
(numpy and torch release the GIL while copying), so a thread keeps up without pickling batches between processes
or forking a process that holds a CUDA context; ``benchmarks/bench_e2e.py`` measures the two.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def as_row_array(x: torch.Tensor) -> np.ndarray:
    """(b, 1) float row indices -> (b,) int64 numpy rows (exact in float32 below 2**24)."""
    return x.detach()[:, 0].round().long().cpu().numpy()


class InputFeed:
    """Loads a dataset's rows for a backbone on ``device``; ``depth`` batches ahead (0: on the spot only).

    ``stats()`` -> {"images": rows fed, "wait_s": seconds a caller waited for data (loading on the spot or a
    background batch not yet ready)}.
    """

    def __init__(self, dataset: Any, depth: int = 2, channels_last: bool = False):
        self.dataset, self.depth, self.channels_last = dataset, int(depth), channels_last
        # images travel as uint8 (from the decoded array, or decoded now with decode_cache='off'), normalised on
        # the device
        self.uint8 = callable(getattr(dataset, "load_uint8", None))
        self.pin = False
        self.pending: deque[tuple[np.ndarray, Future]] = deque()
        self.queued: deque[np.ndarray] = deque()
        self.pool: ThreadPoolExecutor | None = None
        self.images, self.wait_s = 0, 0.0

    def __getstate__(self) -> dict[str, Any]:  # deepcopy / pickle: no thread or futures travel
        state = dict(self.__dict__)
        state.update(pending=deque(), queued=deque(), pool=None)
        return state

    def to_device(self, device: torch.device) -> None:
        """Pins host batches when the backbone sits on CUDA (non-blocking copies need pinned memory)."""
        self.pin = device.type == "cuda"

    def load(self, rows: np.ndarray) -> Any:
        """Host-side batch for ``rows``: uint8 images (pinned on CUDA) or the dataset's own ``load``."""
        batch = self.dataset.load_uint8(rows) if self.uint8 else self.dataset.load(rows)
        if self.pin and isinstance(batch, torch.Tensor):
            batch = batch.pin_memory()
        return batch

    def expect(self, row_batches: Sequence[np.ndarray]) -> None:
        """The batches the next calls will ask for, in order; replaces what was announced before."""
        self.cancel()
        if self.depth <= 0:
            return
        self.queued = deque(row_batches)
        self.top_up()

    @contextmanager
    def nested(self, row_batches: Sequence[np.ndarray]) -> Iterator[None]:
        """Announces ``row_batches`` (an evaluation's chunks) ahead of what was announced before (an epoch's rest,
        mid-epoch evaluations), which is taken up again afterwards: batches already loading are kept."""
        saved = (self.pending, self.queued)
        self.pending, self.queued = deque(), deque(row_batches if self.depth > 0 else ())
        self.top_up()
        try:
            yield
        finally:
            for _, future in self.pending:
                future.cancel()
            self.pending, self.queued = saved
            self.top_up()

    def top_up(self) -> None:
        while self.queued and len(self.pending) < self.depth:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memaware-input")
            rows = self.queued.popleft()
            self.pending.append((rows, self.pool.submit(self.load, rows)))

    def cancel(self) -> None:
        """Forgets what was announced and stops the background thread (none outlives an epoch or an evaluation:
        a process with a second thread alive may not fork, ``memaware.threads.can_fork``)."""
        for _, future in self.pending:
            future.cancel()
        self.pending.clear()
        self.queued.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def host_batch(self, rows: np.ndarray) -> Any:
        t0 = time.perf_counter()
        if self.pending and np.array_equal(self.pending[0][0], rows):
            _, future = self.pending.popleft()
            batch = future.result()
            self.top_up()
            if not self.pending:
                self.cancel()
        else:
            batch = self.load(rows)
        self.wait_s += time.perf_counter() - t0
        self.images += len(rows)
        return batch

    def __call__(self, x: torch.Tensor, device: torch.device) -> Any:
        """(b, 1) row indices -> the backbone's input on ``device``."""
        from ..data.datasets.decoded import normalize_images
        from .backbones import batch_to

        batch = self.host_batch(as_row_array(x))
        if not self.uint8:
            batch = batch_to(batch, device)
        else:
            batch = normalize_images(batch.to(device, non_blocking=True), self.dataset.normalize)
        if self.channels_last and isinstance(batch, torch.Tensor) and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def stats(self) -> dict[str, float]:
        return {"images": self.images, "wait_s": self.wait_s}


__all__ = ["InputFeed", "as_row_array"]
