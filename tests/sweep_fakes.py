"""Stand-ins for memaware.sweep.runner.execute in the sweep tests (imported by pool workers and submitit jobs by name).

``fake_execute`` advances a JSON "checkpoint.pt" one step at a time (``epochs`` steps, MEMAWARE_FAKE_STEP_S seconds
each), so a killed run resumes from it, and writes a results.json whose numbers depend only on the spec (never on
paths), in the runner's layout (``criteria``). XRM and MAT runs write inferred_groups.npz; methods named in
MEMAWARE_FAKE_FAIL raise.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from memaware.artifacts import atomic_writer, write_json

CRITERIA = ("val_wga", "val_gi_wga", "val_worst_class", "val_avg")


def _identity(spec: dict) -> str:
    keep = {k: v for k, v in spec.items() if k not in ("device", "inferred_groups", "data", "data_dir")}
    return json.dumps(keep, sort_keys=True)


def fake_numbers(spec: dict) -> dict:
    """criterion -> {"epoch", "val_score", "val", "test"}: a deterministic function of the spec."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(_identity(spec).encode()).digest()[:8], "little"))
    has_gi = spec["method"] in ("xrm", "mat") or bool(spec.get("inferred_groups"))
    out = {}
    for c in CRITERIA:
        report = {"avg_acc": float(rng.uniform(0.6, 1.0)), "worst_group_acc": float(rng.uniform(0.2, 0.9))}
        report["worst_class_acc"] = report["worst_group_acc"]
        report["groups"] = {}
        if c == "val_gi_wga" and not has_gi:
            continue
        out[c] = {"epoch": int(rng.integers(1, 10)), "val_score": float(rng.uniform()), "val": report, "test": report}
    return out


def fake_execute(spec: dict, run_dir: str | os.PathLike) -> dict:
    run_dir = Path(run_dir)
    if spec["method"] in os.environ.get("MEMAWARE_FAKE_FAIL", "").split(","):
        raise RuntimeError(f"fake failure of {spec['method']}")
    if spec.get("inferred_groups") and not Path(spec["inferred_groups"]).is_file():
        raise FileNotFoundError(spec["inferred_groups"])
    step_s = float(os.environ.get("MEMAWARE_FAKE_STEP_S", "0.005"))
    ckpt = run_dir / "checkpoint.pt"
    state = json.loads(ckpt.read_text()) if ckpt.is_file() else {"step": 0, "trace": 1}
    resumed_from = state["step"]
    for step in range(state["step"], int(spec["hparams"]["epochs"])):
        time.sleep(step_s)
        state = {"step": step + 1, "trace": (state["trace"] * 31 + step) % 1_000_003}
        write_json(ckpt, state)
    criteria = fake_numbers(spec)
    primary = criteria["val_wga"]
    res = {
        "spec": spec,
        "method": spec["method"],
        "uses_train_groups": spec["method"] in ("groupdro", "subg", "rwg"),
        "uses_val_groups": True,
        "selection": "val_wga",
        "val": primary["val"],
        "test": primary["test"],
        "criteria": criteria,
        "trace": state["trace"],
        "resumed_from": resumed_from,
        "seconds": 0.0,
    }
    if spec["method"] in ("xrm", "mat"):
        atomic_writer(run_dir / "inferred_groups.npz", lambda p: np.savez(p, val_groups=np.zeros(4)), ".npz")
    write_json(run_dir / "results.json", res)
    ckpt.unlink(missing_ok=True)
    return res


def fake_execute_many(specs: list[dict], run_dirs: list[Path]) -> list[dict]:
    """The vectorized hook: records the batch size in run_dir/batch.txt, then trains each."""
    for d in run_dirs:
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / "batch.txt").write_text(str(len(specs)))
    return [fake_execute(s, d) for s, d in zip(specs, run_dirs, strict=True)]


def comparable(results: dict, root: Path) -> dict:
    """results.json without what legitimately differs between two sweeps of the same runs."""
    text = json.dumps(results, sort_keys=True).replace(str(root), "<DIR>")
    out = json.loads(text)
    for key in ("seconds", "resumed_from"):
        out.pop(key, None)
    out.get("spec", {}).pop("checkpoint_every", None)
    return out


# ---- runs that logged their evaluations (evaluations.npz), for memaware table (tests/test_table.py) ------------
# Validation: 16 examples, groups y=0,a=0 (ids 0-5), y=0,a=1 (6-7), y=1,a=0 (8-9), y=1,a=1 (10-15).
VAL_Y = [0] * 8 + [1] * 8
VAL_A = [0] * 6 + [1] * 2 + [0] * 2 + [1] * 6
# which validation examples an evaluation gets wrong -> (val_wga, val_worst_class, val_avg)
PATTERNS = {
    "A": [6, 8],  # 0.5, 0.875, 0.875
    "B": [0, 1, 10],  # 0.667, 0.75, 0.8125
    "C": [6],  # 0.5, 0.875, 0.9375
    "E": [0],  # 0.833, 0.875, 0.9375
}
LOGGED = {0: "CBA", 1: "BE"}  # comb -> the patterns of its evaluations (epochs 1, 2, ...)


def class0_right(comb: int, t: int) -> int:
    """The test predictions of evaluation t of comb are right on the first ``class0_right`` of 10 class-0 test
    examples and on every class-1 one, so test worst-group = that / 10 and average = (that + 10) / 20 identify the
    evaluation."""
    return t + 1 + 3 * comb


def _report(avg: float, worst: float) -> dict:
    return {"avg_acc": avg, "worst_group_acc": worst, "worst_class_acc": worst, "groups": {}}


def write_logged_run(root: Path, comb: int, seed: int, groups_file: Path | None) -> Path:
    """An ERM run root/erm/comb<comb>_seed<seed> of dataset 'toy' whose evaluations.npz logs LOGGED[comb] (numpy
    arrays only: writing it needs no torch) beside a results.json with stale numbers; ``groups_file``: an XRM-like
    inferred_groups.npz (written if missing, groups = the attribute) that the spec names."""
    from memaware.evallog import EvalLog

    val_y, val_a = np.array(VAL_Y), np.array(VAL_A)
    test_y = np.array([0] * 10 + [1] * 10)
    log = EvalLog.start(val_y, val_a, test_y, test_y.copy(), 2, 2, [0, 1, 2, 3])
    for t, pattern in enumerate(LOGGED[comb]):
        val_pred = val_y.copy()
        val_pred[PATTERNS[pattern]] = 1 - val_pred[PATTERNS[pattern]]
        test_pred = test_y.copy()
        test_pred[class0_right(comb, t) : 10] = 1
        log.append(t + 1, 50 * (t + 1), val_pred, test_pred)
    d = root / "erm" / f"comb{comb}_seed{seed}"
    log.save(d / "evaluations.npz")
    spec = {"method": "erm", "dataset": "toy", "seed": seed, "comb": comb, "hparams": {}}
    if groups_file is not None:
        spec["inferred_groups"] = str(groups_file)
    # stale numbers in results.json: a table that read them instead of the log would choose otherwise
    stale = {
        c: {"epoch": 99, "val_score": 0.99 * comb, "val": _report(0.9, 0.9), "test": _report(0.01, 0.01)}
        for c in ("val_wga", "val_worst_class", "val_avg")
    }
    write_json(d / "spec.json", spec)
    write_json(d / "results.json", {"spec": spec, "method": "erm", "uses_train_groups": False, "criteria": stale})
    if groups_file is not None and not groups_file.exists():
        np.savez(groups_file, val_groups=np.array(VAL_A))  # "inferred" groups = the attribute
    return d
