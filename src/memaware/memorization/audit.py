"""Per-group summaries of memorization scores, the minority-vs-majority gap, and the warnings a person reads.

Groups are (y, a) pairs of the training split. Within each class the largest group is that class's majority, and
so is any group at least ``MINORITY_RATIO`` (1/2) of its size; the smaller groups are its minorities (for Setup 2.1
and Waterbirds-like data this is a == y vs a != y; in a CelebA-like class whose two attribute values are about as
frequent, both are majorities, so that the gap is the rare group's, not diluted by a group of 41 % of the data).
Examples whose attribute is unknown (a = -1) form a group 'y=<y>,a=?' with role 'unknown' and enter no gap.

A warning is raised for a minority group whose mean score exceeds its class majority's mean by at least
``warn_gap`` (score units) and by more than 3 standard errors of the difference, with at least 5 examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.groups import named_group

QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
MIN_GROUP = 5
MINORITY_RATIO = 0.5  # a group smaller than this fraction of its class's largest group is a minority


def group_ids(y: np.ndarray, a: np.ndarray, num_attrs: int) -> tuple[np.ndarray, dict[int, str]]:
    """(n,) group id y * A + a (unknown attribute: -1 - y) and {id: name}."""
    y, a = np.asarray(y), np.asarray(a)
    g = np.where(a >= 0, y * num_attrs + a, -1 - y)
    names = {int(i): (f"y={i // num_attrs},a={i % num_attrs}" if i >= 0 else f"y={-1 - i},a=?") for i in np.unique(g)}
    return g, names


def group_roles(y: np.ndarray, g: np.ndarray) -> dict[int, str]:
    """{group id: 'majority' | 'minority' | 'unknown'}: the largest known group of each class is its majority, and
    so is any group of at least ``MINORITY_RATIO`` of its size (module doc)."""
    roles: dict[int, str] = {}
    for c in np.unique(y):
        known = [int(i) for i in np.unique(g[(y == c) & (g >= 0)])]
        sizes = {i: int((g == i).sum()) for i in known}
        largest = max(sizes.values(), default=0)
        for i in known:
            roles[i] = "majority" if sizes[i] >= MINORITY_RATIO * largest else "minority"
    for i in np.unique(g[g < 0]):
        roles[int(i)] = "unknown"
    return roles


def stats(v: np.ndarray) -> dict[str, Any]:
    """n, mean, median, std, sem, quantiles, fraction above 0.5 of a score vector."""
    v = np.asarray(v, dtype=np.float64)
    if len(v) == 0:
        return {"n": 0}
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"n": len(v), "mean": float(v.mean()), "median": float(np.median(v)), "std": std,
            "sem": std / np.sqrt(len(v)), "quantiles": {f"{q:g}": float(np.quantile(v, q)) for q in QUANTILES},
            "frac_above_0.5": float((v > 0.5).mean())}


def summarize(scores: np.ndarray, y: np.ndarray, a: np.ndarray, num_attrs: int) -> dict[str, Any]:
    """{"overall", "groups": {name: stats + role}, "gap": {...}} for one method's scores (n,)."""
    g, names = group_ids(y, a, num_attrs)
    roles = group_roles(np.asarray(y), g)
    groups = {names[i]: {"role": roles[i], **stats(scores[g == i])} for i in sorted(names, key=lambda j: (j < 0, j))}
    maj, mino = [g == i for i in names if roles[i] == "majority"], [g == i for i in names if roles[i] == "minority"]
    gap: dict[str, Any] = {}
    if mino:
        maj_mask, min_mask = np.any(maj, axis=0), np.any(mino, axis=0)
        gap = {"majority_mean": float(scores[maj_mask].mean()), "minority_mean": float(scores[min_mask].mean())}
        gap["minority_minus_majority"] = gap["minority_mean"] - gap["majority_mean"]
        per_class = {}
        for c in np.unique(y):
            ids = [i for i in names if i >= 0 and i // num_attrs == c]
            major = sorted((i for i in ids if roles[i] == "majority"), key=lambda i: -groups[names[i]]["n"])
            if not major:
                continue
            m = groups[names[major[0]]]["mean"]
            per_class[f"y={c}"] = {"majority_group": names[major[0]],
                                   "minority_minus_majority": {names[i]: groups[names[i]]["mean"] - m
                                                               for i in ids if roles[i] == "minority"}}
        gap["per_class"] = per_class
    return {"overall": stats(scores), "groups": groups, "gap": gap}


def train_accuracy(p_true: np.ndarray, y: np.ndarray, a: np.ndarray, num_attrs: int) -> dict[str, Any]:
    """Training accuracy of the full-data predictor (p(y_i | x_i) > 1/2) overall, per group, and pooled over the
    minority and the majority groups (``group_roles``): whether a method *fits* its minority, the half of the
    paper's premise that the scores do not show."""
    right = np.asarray(p_true, dtype=np.float64) > 0.5
    g, names = group_ids(y, a, num_attrs)
    roles = group_roles(np.asarray(y), g)
    out: dict[str, Any] = {"overall": float(right.mean()) if len(right) else None,
                           "groups": {names[i]: float(right[g == i].mean()) for i in sorted(names)}}
    for role in ("minority", "majority"):
        mask = np.isin(g, [i for i in names if roles[i] == role])
        out[role] = float(right[mask].mean()) if mask.any() else None
    return out


def warnings_for(method: str, summary: dict[str, Any], warn_gap: float = 0.1) -> list[str]:
    """Plain-language warnings for minority groups memorized far more than their class majority (module doc)."""
    out = []
    groups = summary["groups"]
    for per in summary["gap"].get("per_class", {}).values():
        major = groups[per["majority_group"]]
        for name, diff in per["minority_minus_majority"].items():
            grp = groups[name]
            se = np.sqrt(grp["sem"] ** 2 + major["sem"] ** 2)
            if grp["n"] >= MIN_GROUP and diff >= warn_gap and diff > 3 * se:
                out.append(
                    f"WARNING [{method}]: minority group {name} (n={grp['n']}) has mean memorization score "
                    f"{grp['mean']:.2f}, against {major['mean']:.2f} for its class's majority group "
                    f"{per['majority_group']}. The model fits these examples one by one instead of by a rule "
                    "the majority shares: near-perfect training accuracy may be hiding a spurious shortcut plus "
                    "memorized exceptions. Check this group's accuracy on held-out data, or train with MAT."
                )
    return out


def gap_change(per_method: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """ERM's and MAT's minority-minus-majority gaps and the fraction by which MAT shrinks ERM's gap."""
    if not {"erm", "mat"} <= set(per_method):
        return None
    ge = per_method["erm"]["gap"].get("minority_minus_majority")
    gm = per_method["mat"]["gap"].get("minority_minus_majority")
    if ge is None or gm is None:
        return None
    return {"erm_gap": ge, "mat_gap": gm, "reduction": (1 - gm / ge) if ge > 0 else float("nan")}


TRAINED_WITH = ("epochs", "max_steps", "lr", "optimizer", "momentum", "weight_decay", "batch_size", "num_models")


def _model_lines(result: dict[str, Any]) -> list[str]:
    """What was audited and how it was trained (the settings recorded, never defaults filled in)."""
    model = result.get("model") or {}
    if not model.get("backbone"):
        return []
    first = next(iter(result["methods"].values()), {}).get("params", {})
    optional = ("max_steps", "momentum", "weight_decay")  # shown when set
    used = ", ".join(f"{k} {first[k]}" for k in TRAINED_WITH if k in first and (k not in optional or first[k]))
    return [f"  model:  {model['backbone']}, {model['training']}" + (f"; {used}" if used else "")]


def _how_much(change: dict[str, float]) -> str:
    r = change["reduction"]
    if change["erm_gap"] > 0 >= change["mat_gap"]:
        return "no minority excess left under MAT"
    return f"{r:.0%} smaller" if r >= 0 else f"{-r:.0%} larger"


def audit_text(result: dict[str, Any], out: str) -> str:
    """The summary printed for a person: per method, groups from most to least memorized; warnings; the gap."""
    lines = [f"memorization audit, estimator '{result['estimator']}' -> {out}",
             f"  target: {result['target']}", f"  units:  {result['units']}"]
    lines += _model_lines(result)
    names = (result.get("data", {}).get("label_names"), result.get("data", {}).get("attr_names"))
    for method, res in result["methods"].items():
        groups = sorted(res["groups"].items(), key=lambda kv: -kv[1].get("mean", -np.inf))
        lines.append(f"  {method} ({res['seconds']:.1f} s): groups from most to least memorized")
        shown = {name: named_group(name, *names) for name, _ in groups}  # a table's class / attribute names
        width = max(10, *(len(v) for v in shown.values())) if shown else 10
        lines.append(f"    {'group':<{width}} {'role':<9} {'n':>6} {'mean':>7} {'median':>7} {'>0.5':>6}")
        for name, st in groups:
            if st["n"]:
                lines.append(f"    {shown[name]:<{width}} {st['role']:<9} {st['n']:>6} {st['mean']:>7.3f} "
                             f"{st['median']:>7.3f} {st['frac_above_0.5']:>6.1%}")
        gap = res["gap"]
        if gap:
            lines.append(f"    minority mean {gap['minority_mean']:.3f} vs majority mean {gap['majority_mean']:.3f} "
                         f"(gap {gap['minority_minus_majority']:+.3f})")
    change = result["audit"].get("gap_change")
    if change:
        lines.append(f"  MAT changes the minority-majority gap from {change['erm_gap']:+.3f} (ERM) to "
                     f"{change['mat_gap']:+.3f}: " + _how_much(change))
    if result["audit"]["no_attributes"]:
        lines.append("  note: the training split has no attribute labels (a = -1): groups are classes, no gap")
    lines += result["audit"]["warnings"] or ["  no minority group is memorized far more than its majority"]
    lines += [f"  note: {note}" for note in result.get("data", {}).get("notes", [])]
    return "\n".join(lines)
