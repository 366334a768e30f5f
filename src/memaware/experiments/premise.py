"""The paper's premise, measured on one Table-1 analogue: ERM *fits* its training minority (training accuracy of
the minority groups) and *memorizes* it (the minority-minus-majority gap of Fig. 2's memorization scores), and how
much MAT changes that gap. Table 1's claims are about what happens in that regime; where an analogue is not in it
(the paper's Case 1: nothing to memorize, ERM is fine), the report says so beside the claims.

The audit is Fig. 2's on the analogue's own heads (``experiments.memorization.run_audit``): Table 1 trains linear
heads on every analogue, so the estimator is the closed-form ``newton`` leave-one-out step of the L2-logistic head
those heads converge to (seconds; validated against exact leave-one-out in docs/memorization.md). MAT's shift
comes from XRM trained with the analogue's Table-1 protocol (``RECIPES``). Each audit writes its
``memorization.json``, ``scores.npz`` and ``fig2.png`` into ``OUT/table1/premise/<analogue>/``; the numbers go
into table1.json (``analogues[name]["premise"]``), and the verdict is drawn by the report (``report.premise``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..data import GroupData

ESTIMATOR = "newton"
# the analogue's Table-1 protocol (what MAT's XRM phase trains with) and the head's weight decay (that of Fig. 2:
# the paper's Setup 2.1 keeps the linear estimators' default 1e-3, the features family's heads decay by 1e-4)
RECIPES: dict[str, dict[str, Any]] = {
    "setup21": {"epochs": 1000, "lr": 1e-2, "optimizer": "sgd", "batch_size": 0, "weight_decay": 1e-3,
                "bias": False},
    "features": {"epochs": 30, "lr": 1e-3, "optimizer": "adam", "batch_size": 128, "weight_decay": 1e-4,
                 "bias": True},
}  # fmt: skip


def premise_recipe(name: str, epochs: int | None = None) -> dict[str, Any]:
    """The audit's training recipe for analogue ``name``; ``epochs`` overrides the protocol's (the sweep's)."""
    recipe = dict(RECIPES["setup21" if name == "setup21" else "features"])
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    return recipe


def measure_premise(
    data: GroupData, name: str, out: str | Path, source: str, seed: int = 0, epochs: int | None = None
) -> dict[str, Any]:
    """ERM's and MAT's Newton memorization audit of ``data`` into ``out``; returns the premise record: ERM's
    training accuracy (minority, majority, per group), both gaps, the recipe and the seconds it took."""
    from .memorization import audit_config, run_audit

    t0 = time.perf_counter()
    recipe = premise_recipe(name, epochs)
    bias = recipe.pop("bias")
    cfg = audit_config(ESTIMATOR, seed=seed, **recipe)
    res = run_audit(data, ("erm", "mat"), ESTIMATOR, cfg, out, source, model_kwargs={"hidden": (), "bias": bias})
    write_json(Path(out) / KEY_FILE, {"key": audit_key(data, ESTIMATOR, cfg, bias)})
    erm = res["methods"]["erm"]
    change = res["audit"]["gap_change"] or {}
    return {
        "estimator": ESTIMATOR, "recipe": {**recipe, "bias": bias},
        "erm_train_accuracy": erm.get("train_accuracy"),
        "mat_train_accuracy": res["methods"]["mat"].get("train_accuracy"),
        "erm_gap": change.get("erm_gap"), "mat_gap": change.get("mat_gap"),
        "group_means": {m: {g: s.get("mean") for g, s in e["groups"].items()} for m, e in res["methods"].items()},
        "roles": {g: s["role"] for g, s in erm["groups"].items()},
        "audit": str(Path(out) / "memorization.json"), "seconds": time.perf_counter() - t0,
    }  # fmt: skip


KEY_FILE = "audit_key.json"


def audit_key(data: GroupData, estimator: str, cfg: Any, bias: bool) -> str:
    """SHA-256 of everything an ERM/MAT audit depends on: the data's arrays, the estimator, the training
    configuration and the head's bias. Equal keys give equal audits (the fits are deterministic)."""
    h = hashlib.sha256()
    for t in (data.x, data.y, data.a, data.split):
        h.update(t.contiguous().numpy().tobytes())
    h.update(json.dumps({"estimator": estimator, "config": asdict(cfg), "bias": bias}, sort_keys=True,
                        default=str).encode())  # fmt: skip
    return h.hexdigest()


def find_audit(root: str | Path, key: str) -> Path | None:
    """The folder under ``root`` (``OUT/table1/premise``) holding a finished audit with ``key``, or None: Fig. 2's
    audits of Setup 2.1 and the FashionBirds hard pair are the premise audits of Table 1, run once."""
    for path in sorted(Path(root).glob(f"*/{KEY_FILE}")):
        try:
            found = json.loads(path.read_text()).get("key") == key
        except (OSError, ValueError):
            continue
        if found and (path.parent / "memorization.json").is_file() and (path.parent / "fig2.png").is_file():
            return path.parent
    return None


def premise_summary(premise: dict[str, Any]) -> str:
    """'train minority 100.0 %, gap +0.404 -> +0.299' (None-safe: a group-free audit has no gap)."""
    acc = (premise.get("erm_train_accuracy") or {}).get("minority")
    ge, gm = premise.get("erm_gap"), premise.get("mat_gap")
    text = "train minority n/a" if acc is None else f"train minority {100 * acc:.1f} %"
    return text + ("" if ge is None or gm is None else f", gap {ge:+.3f} -> {gm:+.3f}")


__all__ = ["ESTIMATOR", "KEY_FILE", "RECIPES", "audit_key", "find_audit", "measure_premise", "premise_recipe",
           "premise_summary"]
