"""Per-group accuracy and the model-selection criteria built on it (pure functions on arrays).

Every function takes numpy arrays or torch tensors. Torch tensors (all of a call's arrays) are computed with torch
where they are (a GPU engine's predictions stay on the GPU); anything else is computed in numpy, so that reading a
finished run (``memaware table``) never imports torch. Both give the same floats on the CPU: hits are sums of 0/1
values (exact), and every accuracy is a float32 division ``hits / counts``, as torch computed it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import is_tensor, to_numpy
from .data.groups import group_name

ArrayLike = Any  # a numpy array or a torch tensor (annotations only: importing torch here would defeat the module)


def _tensors(*arrays: ArrayLike) -> bool:
    """Whether a call computes in torch: every array argument is a tensor."""
    return all(is_tensor(v) for v in arrays)


def group_ids(y: ArrayLike, a: ArrayLike, num_attrs: int) -> ArrayLike:
    """(n,) group ids y * A + a, -1 where the attribute a is unknown (a < 0); a tensor for tensors."""
    if _tensors(y, a):
        import torch

        return torch.where(a >= 0, y * num_attrs + a, torch.full_like(y, -1))
    y, a = to_numpy(y), to_numpy(a)
    return np.where(a >= 0, y * num_attrs + a, -1)


def accuracy(correct: ArrayLike) -> float:
    """Mean of ``correct`` (n,) bool or 0/1 as a float32 mean (``correct.float().mean()``); nan when n = 0."""
    if is_tensor(correct):
        return float(correct.float().mean())
    correct = to_numpy(correct)
    if not correct.size:
        return float("nan")
    return float(np.float32(np.count_nonzero(correct)) / np.float32(correct.size))


def group_correct(correct: ArrayLike, group: ArrayLike, num_groups: int) -> tuple[ArrayLike, ArrayLike]:
    """Sums ``correct`` (n,) per group id (n,) in 0..G-1 (ids < 0 are ignored).

    Returns (hits (G,), counts (G,)) as float32 tensors (on ``correct``'s device) for tensors, numpy arrays otherwise.
    """
    if _tensors(correct, group):
        import torch

        keep = group >= 0
        g = group[keep]
        hits = torch.zeros(num_groups, dtype=torch.float32, device=correct.device).index_add_(
            0, g, correct[keep].float()
        )
        counts = torch.bincount(g, minlength=num_groups).float()
        return hits, counts
    correct, group = to_numpy(correct), to_numpy(group)
    keep = group >= 0
    g = group[keep]
    hits = np.bincount(g, weights=correct[keep].astype(np.float64), minlength=num_groups)
    counts = np.bincount(g, minlength=num_groups)
    return hits.astype(np.float32), counts.astype(np.float32)


def hit_counts(
    pred: ArrayLike, y: np.ndarray, group: np.ndarray, num_groups: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correct predictions of C models, ``pred`` (C, n), against labels ``y`` (n,) int64: per group (C, G) of
    ``group`` (n,) int64 ids (-1: no group), per class (C, K) and in all (C,), as int64 numpy arrays. A tensor is
    counted with torch where it is (a GPU engine's predictions: one index_add over the C x n correctness), and only
    the counts come back to the CPU."""
    C = len(pred)
    if is_tensor(pred):
        import torch

        device = pred.device
        g, y_t = torch.from_numpy(group).to(device), torch.from_numpy(y).to(device)
        correct = (pred == y_t).long()  # (C, n)
        keep = g >= 0
        group_hits = torch.zeros(C, num_groups, dtype=torch.long, device=device)
        group_hits.index_add_(1, g[keep], correct[:, keep])
        class_hits = torch.zeros(C, num_classes, dtype=torch.long, device=device)
        class_hits.index_add_(1, y_t, correct)
        return group_hits.cpu().numpy(), class_hits.cpu().numpy(), correct.sum(dim=1).cpu().numpy()
    correct = np.asarray(pred) == y
    keep = group >= 0
    offsets = np.arange(C)[:, None]

    def per_row(ids: np.ndarray, hit: np.ndarray, width: int) -> np.ndarray:
        flat = np.bincount((ids + width * offsets).ravel(), weights=hit.ravel().astype(np.float64), minlength=C * width)
        return flat.reshape(C, width).astype(np.int64)

    group_hits = per_row(np.broadcast_to(group[keep], (C, int(keep.sum()))), correct[:, keep], num_groups)
    class_hits = per_row(np.broadcast_to(y, correct.shape), correct, num_classes)
    return group_hits, class_hits, correct.sum(axis=1).astype(np.int64)


def worst_group_acc(correct: ArrayLike, group: ArrayLike, num_groups: int) -> float:
    """Minimum accuracy over the groups present (ids < 0 ignored); nan when no group is present."""
    hits, counts = group_correct(correct, group, num_groups)
    return worst_of(hits, counts)


def worst_class_acc(correct: ArrayLike, y: ArrayLike, num_classes: int) -> float:
    """Minimum per-class accuracy over the classes present."""
    return worst_group_acc(correct, y, num_classes)


def majority_minority_acc(correct: ArrayLike, y: ArrayLike, a: ArrayLike) -> tuple[float, float]:
    """Accuracy on the paper's majority (a == y) and minority (a != y, a known) examples; nan if empty. All (n,)."""
    if not _tensors(correct, y, a):
        correct, y, a = to_numpy(correct), to_numpy(y), to_numpy(a)
    known = a >= 0
    maj, mino = known & (a == y), known & (a != y)
    acc = [accuracy(correct[m]) if m.any() else float("nan") for m in (maj, mino)]
    return acc[0], acc[1]


def group_report(pred: ArrayLike, y: ArrayLike, a: ArrayLike, num_classes: int, num_attrs: int) -> dict:
    """{"avg_acc", "worst_group_acc", "worst_class_acc", "groups": {"y=<y>,a=<a>": {"n", "acc"}}} of predicted
    classes ``pred`` (n,) against labels ``y`` (n,) and attributes ``a`` (n,), -1 unknown.

    ``avg_acc`` is over examples; ``worst_group_acc`` over the groups present with known attribute
    (nan when no attribute is known).
    """
    if not _tensors(pred, y, a):
        pred, y, a = to_numpy(pred), to_numpy(y), to_numpy(a)
    correct = pred == y
    g = group_ids(y, a, num_attrs)
    hits, counts = group_correct(correct, g, num_classes * num_attrs)
    groups = {
        group_name(i, num_attrs): {"n": int(counts[i]), "acc": float(hits[i] / counts[i])}
        for i in range(num_classes * num_attrs)
        if counts[i] > 0
    }
    return {
        "avg_acc": accuracy(correct) if len(y) else float("nan"),
        "worst_group_acc": worst_group_acc(correct, g, num_classes * num_attrs),
        "worst_class_acc": worst_class_acc(correct, y, num_classes),
        "groups": groups,
    }


def report_from_counts(
    group_hits: ArrayLike,
    group_counts: ArrayLike,
    class_hits: ArrayLike,
    class_counts: ArrayLike,
    hits: int,
    n: int,
    num_attrs: int,
) -> dict:
    """``group_report``'s dict from counts: ``group_hits`` / ``group_counts`` (G,) over groups y * A + a (examples
    with a known attribute), ``class_hits`` / ``class_counts`` (K,) over all examples, ``hits`` of ``n`` examples.
    Computed in numpy whatever the input (counts are small).

    The arithmetic is ``group_report``'s (float32 hits / float32 counts, then ``float``), so the numbers are equal
    to the last bit: a report logged as counts during training reads the same as one computed from predictions.
    """
    gh, gc = to_numpy(group_hits).astype(np.float32), to_numpy(group_counts).astype(np.float32)
    ch, cc = to_numpy(class_hits).astype(np.float32), to_numpy(class_counts).astype(np.float32)
    groups = {
        group_name(i, num_attrs): {"n": int(gc[i]), "acc": float(gh[i] / gc[i])} for i in range(len(gc)) if gc[i] > 0
    }
    avg = np.float32(hits) / np.float32(n) if n else float("nan")  # as mean() on the CPU
    return {
        "avg_acc": float(avg),
        "worst_group_acc": worst_of(gh, gc),
        "worst_class_acc": worst_of(ch, cc),
        "groups": groups,
    }


def worst_of(hits: ArrayLike, counts: ArrayLike) -> float:
    """Minimum of float32 ``hits / counts`` (G,) over the entries with counts > 0; nan when there is none."""
    present = counts > 0
    return float((hits[present] / counts[present]).min()) if bool(present.any()) else float("nan")
