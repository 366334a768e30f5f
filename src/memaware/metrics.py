"""Per-group accuracy and the model-selection criteria built on it (pure functions on tensors)."""

from __future__ import annotations

from .data.groups import group_name
from .lazy import lazy_module

torch = lazy_module("torch")


def group_correct(
    correct: torch.Tensor, group: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums ``correct`` (n,) per group id (n,) in 0..G-1 (ids < 0 are ignored).

    Returns (hits (G,), counts (G,)) as float tensors.
    """
    keep = group >= 0
    g = group[keep]
    hits = torch.zeros(num_groups, dtype=torch.float32, device=correct.device).index_add_(
        0, g, correct[keep].float()
    )
    counts = torch.bincount(g, minlength=num_groups).float()
    return hits, counts


def worst_group_acc(correct: torch.Tensor, group: torch.Tensor, num_groups: int) -> float:
    """Minimum accuracy over the groups present (ids < 0 ignored); nan when no group is present."""
    hits, counts = group_correct(correct, group, num_groups)
    present = counts > 0
    if not present.any():
        return float("nan")
    return float((hits[present] / counts[present]).min())


def worst_class_acc(correct: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Minimum per-class accuracy over the classes present."""
    return worst_group_acc(correct, y, num_classes)


def majority_minority_acc(correct: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> tuple[float, float]:
    """Accuracy on the paper's majority (a == y) and minority (a != y, a known) examples; nan if empty."""
    known = a >= 0
    maj, mino = known & (a == y), known & (a != y)
    acc = [float(correct[m].float().mean()) if m.any() else float("nan") for m in (maj, mino)]
    return acc[0], acc[1]


def group_report(
    pred: torch.Tensor, y: torch.Tensor, a: torch.Tensor, num_classes: int, num_attrs: int
) -> dict:
    """{"avg_acc", "worst_group_acc", "worst_class_acc", "groups": {"y=<y>,a=<a>": {"n", "acc"}}}.

    ``avg_acc`` is over examples; ``worst_group_acc`` over the groups present with known attribute
    (nan when no attribute is known).
    """
    correct = pred == y
    g = torch.where(a >= 0, y * num_attrs + a, torch.full_like(y, -1))
    hits, counts = group_correct(correct, g, num_classes * num_attrs)
    groups = {
        group_name(i, num_attrs): {"n": int(counts[i]), "acc": float(hits[i] / counts[i])}
        for i in range(num_classes * num_attrs)
        if counts[i] > 0
    }
    return {
        "avg_acc": float(correct.float().mean()) if len(y) else float("nan"),
        "worst_group_acc": worst_group_acc(correct, g, num_classes * num_attrs),
        "worst_class_acc": worst_class_acc(correct, y, num_classes),
        "groups": groups,
    }


def report_from_counts(
    group_hits: torch.Tensor,
    group_counts: torch.Tensor,
    class_hits: torch.Tensor,
    class_counts: torch.Tensor,
    hits: int,
    n: int,
    num_attrs: int,
) -> dict:
    """``group_report``'s dict from counts: ``group_hits`` / ``group_counts`` (G,) over groups y * A + a (examples
    with a known attribute), ``class_hits`` / ``class_counts`` (K,) over all examples, ``hits`` of ``n`` examples.

    The arithmetic is ``group_report``'s (float32 hits / float32 counts, then ``float``), so the numbers are equal
    to the last bit: a report logged as counts during training reads the same as one computed from predictions.
    """
    gh, gc = torch.as_tensor(group_hits).float(), torch.as_tensor(group_counts).float()
    ch, cc = torch.as_tensor(class_hits).float(), torch.as_tensor(class_counts).float()
    groups = {
        group_name(i, num_attrs): {"n": int(gc[i]), "acc": float(gh[i] / gc[i])} for i in range(len(gc)) if gc[i] > 0
    }
    avg = torch.tensor(hits, dtype=torch.float32) / torch.tensor(n, dtype=torch.float32)  # as mean() on the CPU
    return {
        "avg_acc": float(avg) if n else float("nan"),
        "worst_group_acc": _worst_of(gh, gc),
        "worst_class_acc": _worst_of(ch, cc),
        "groups": groups,
    }


def _worst_of(hits: torch.Tensor, counts: torch.Tensor) -> float:
    """Minimum of float32 hits / counts over the entries with counts > 0; nan when there is none."""
    present = counts > 0
    return float((hits[present] / counts[present]).min()) if bool(present.any()) else float("nan")
