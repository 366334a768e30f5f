"""Selection after training: the evaluation log (memaware.evallog) and the criteria computed from it
(memaware.selection) give the same numbers as the online tracking.Selector."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memaware import selection
from memaware.data.groups import GroupData
from memaware.errors import ConfigError, DataError
from memaware.evallog import EvalLog
from memaware.metrics import group_report
from memaware.selection import Criterion, register_criterion, unregister_criterion

K, A = 2, 2


def _labels(gen: torch.Generator, n: int, unknown: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, K, (n,), generator=gen)
    a = torch.randint(0, A, (n,), generator=gen)
    a[torch.rand(n, generator=gen) < unknown] = -1
    return y, a


def _noisy(gen: torch.Generator, y: torch.Tensor, p: float) -> torch.Tensor:
    return torch.where(torch.rand(len(y), generator=gen) < p, y, 1 - y)


def _scenario(seed: int, drop_val_group: bool = False, val_unknown: float = 0.0, test_unknown: float = 0.0):
    gen = torch.Generator().manual_seed(seed)
    sizes = (40, 14, 50)  # a small validation split: many exact ties between evaluations
    parts = [_labels(gen, n, u) for n, u in zip(sizes, (0.0, val_unknown, test_unknown), strict=True)]
    y, a = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    split = torch.cat([torch.full((n,), s) for s, n in enumerate(sizes)])
    if drop_val_group:  # group y=1,a=0 has training but no validation examples
        val = split == 1
        a[val & (y == 1)] = 1
    x = torch.arange(len(y), dtype=torch.float32)[:, None]
    return GroupData.from_arrays(x, y, split, a), gen


def _log_for(data: GroupData) -> EvalLog:
    from memaware.data.groups import TEST, TRAIN, VAL

    v, t, tr = data.indices(VAL), data.indices(TEST), data.indices(TRAIN)
    g = data.group[tr]
    present = torch.bincount(g[g >= 0], minlength=data.num_groups) > 0
    return EvalLog.start(data.y[v], data.a[v], data.y[t], data.a[t], data.num_classes, data.num_attrs, present)


def _reference_reports(data: GroupData, rows: list, external: torch.Tensor | None) -> dict:
    """Brute force, independent of selection.py: every criterion's score at every evaluation straight from the
    predictions with memaware.metrics, the best one with ties to the later evaluation, and group_report of it."""
    from memaware.data.groups import TEST, TRAIN, VAL
    from memaware.metrics import group_report, worst_class_acc, worst_group_acc

    val, test, train = data.indices(VAL), data.indices(TEST), data.indices(TRAIN)
    y, a, g = data.y[val], data.a[val], data.group[val]
    K, A, G = data.num_classes, data.num_attrs, data.num_groups
    train_g = data.group[train]
    complete = set(train_g[train_g >= 0].tolist()) <= set(g[g >= 0].tolist())
    out: dict = {}
    for crit in ("val_wga", "val_gi_wga", "val_worst_class", "val_avg"):
        best = None
        for epoch, val_pred, test_pred, own in rows:
            correct = val_pred == y
            if crit == "val_wga":
                if not (complete and bool((a >= 0).all())):
                    break
                score = worst_group_acc(correct, g, G)
            elif crit == "val_gi_wga":
                groups = own if own is not None else external
                if groups is None:
                    continue
                score = worst_group_acc(correct, groups, int(groups.max()) + 1)
            elif crit == "val_worst_class":
                score = worst_class_acc(correct, y, K)
            else:
                score = float(correct.float().mean())
            if best is None or score >= best["val_score"]:
                ya = data.y[test], data.a[test]
                best = {"epoch": epoch, "val_score": score, "val": group_report(val_pred, y, a, K, A),
                        "test": group_report(test_pred, *ya, K, A)}  # fmt: skip
        if best is not None:
            out[crit] = best
    return out


def _drive(data: GroupData, gen: torch.Generator, own: str, external: torch.Tensor | None, T: int = 9):
    """T evaluations of random predictions logged in an EvalLog, and the reports a brute-force reference gives.
    ``own``: 'always' / 'never' / 'some' evaluations where the method infers its own validation groups."""
    from memaware.data.groups import VAL

    log = _log_for(data)
    candidates = [_noisy(gen, data.y, p) for p in (0.5, 0.7, 0.9)]  # repeated: equal scores at several epochs
    y_val = data.y[data.indices(VAL)]
    rows = []
    for t in range(T):
        pred = candidates[int(torch.randint(0, 3, (1,), generator=gen))].clone()
        flip = torch.rand(len(data), generator=gen) < 0.15
        pred[flip] = 1 - pred[flip]
        use_own = own == "always" or (own == "some" and t % 3 == 1)
        inferred = y_val * 2 + torch.randint(0, 2, (len(y_val),), generator=gen) if use_own else None
        val_pred, test_pred = pred[data.indices(VAL)], pred[data.split == 2]
        log.append(t + 1, 10 * (t + 1), val_pred, test_pred, val_inferred=inferred)
        rows.append((t + 1, val_pred, test_pred, inferred))
    return _reference_reports(data, rows, external), log


@pytest.mark.parametrize(
    "case",
    [
        {"own": "always"},  # XRM: its own cross-mistake groups at every evaluation
        {"own": "never", "external": True},  # ERM with an XRM run's groups
        {"own": "never"},  # no inferred groups anywhere: no val_gi_wga
        {"own": "some", "external": True},  # per evaluation: own groups, else the external ones
        {"own": "always", "drop_val_group": True},  # val_wga not computable
        {"own": "never", "val_unknown": 0.2, "test_unknown": 0.3},  # unknown attributes
    ],
)
def test_reports_from_the_log_equal_a_brute_force_reference(case, tmp_path):
    for seed in range(4):
        data, gen = _scenario(seed, case.get("drop_val_group", False), case.get("val_unknown", 0.0))
        if case.get("test_unknown"):
            test = data.split == 2
            a = data.a.clone()
            a[test & (torch.rand(len(a), generator=gen) < case["test_unknown"])] = -1
            data = GroupData.from_arrays(data.x, data.y, data.split, a)
        n_val = int((data.split == 1).sum())
        external = torch.randint(0, 4, (n_val,), generator=gen) if case.get("external") else None
        expected, log = _drive(data, gen, case["own"], external)
        assert selection.reports(log, external) == expected
        assert ("val_wga" in expected) == (not case.get("drop_val_group") and not case.get("val_unknown"))
        assert ("val_gi_wga" in expected) == (case["own"] != "never" or external is not None)
        log.save(tmp_path / "evaluations.npz")
        assert selection.reports(EvalLog.load(tmp_path / "evaluations.npz"), external) == expected


def _tiny_log() -> EvalLog:
    """Validation: 6 examples, groups (y, a) = 00 00 01 10 11 11; test: 4 examples."""
    val_y, val_a = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 0, 1, 1])
    test_y, test_a = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    log = EvalLog.start(val_y, val_a, test_y, test_a, 2, 2, [0, 1, 2, 3])
    # epoch 1: right except group 01         -> wga 0,   worst class 2/3, avg 5/6
    # epoch 2: right except one of group 00  -> wga 1/2, worst class 2/3, avg 5/6
    # epoch 3: wrong on 10 and one of 11     -> wga 0,   worst class 1/3, avg 4/6
    # epoch 4: as epoch 2                    -> ties with it: the later wins
    preds = [[0, 0, 1, 1, 1, 1], [1, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1], [1, 0, 0, 1, 1, 1]]
    tests = [[0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    for epoch, (p, q) in enumerate(zip(preds, tests, strict=True), start=1):
        log.append(epoch, 5 * epoch, torch.tensor(p), torch.tensor(q))
    return log


def test_criteria_by_hand():
    log = _tiny_log()
    assert selection.scores(log, "val_wga") == [0.0, 0.5, 0.0, 0.5]
    assert selection.select(log, "val_wga") == 3  # ties: the later evaluation
    assert selection.select(log, "worst_class") == 3 and selection.select(log, "val_avg") == 3
    assert selection.select(log, "last") == 3 and selection.scores(log, "last")[:3] == [None] * 3
    assert selection.scores(log, "test_wga") == [1.0, 0.0, 0.0, 0.0] and selection.select(log, "test_wga") == 0
    assert selection.get_criterion("test_wga").oracle
    assert selection.select(log, "val_gi_wga") is None  # no inferred groups anywhere
    external = torch.tensor([0, 0, 1, 2, 3, 3])  # as the true groups
    assert selection.scores(log, "val_gi_wga", external) == selection.scores(log, "val_wga")
    with pytest.raises(ConfigError, match="6"):
        selection.select(log, "val_gi_wga", torch.zeros(5, dtype=torch.long))
    rep = selection.reports(log)
    assert set(rep) == {"val_wga", "val_worst_class", "val_avg"} and rep["val_wga"]["epoch"] == 4
    test = rep["val_wga"]["test"]  # epoch 4 predicts 0 everywhere: right on y=0, wrong on y=1
    assert (
        test["avg_acc"] == 0.5 and test["worst_group_acc"] == 0.0 and test["groups"]["y=0,a=1"] == {"n": 1, "acc": 1.0}
    )
    assert rep["val_avg"]["val"] == group_report(torch.tensor([1, 0, 0, 1, 1, 1]), log.val_y, log.val_a, 2, 2)


def test_resolve_mirrors_the_selector():
    log = _tiny_log()
    assert selection.resolve("auto", log) == "val_wga"
    with pytest.raises(ConfigError, match="--inferred-groups DIR/inferred_groups.npz"):  # no inferred groups anywhere
        selection.resolve("va_gi_wga", log)  # refused, never replaced by val_avg
    assert selection.resolve("val_gi_wga", log, torch.zeros(6, dtype=torch.long)) == "val_gi_wga"
    unknown = EvalLog.start(
        torch.tensor([0, 1]), torch.tensor([-1, 0]), torch.tensor([0]), torch.tensor([0]), 2, 1, [0]
    )
    assert selection.resolve("auto", unknown) == "val_avg"
    unknown.append(0, 0, torch.tensor([0, 1]), torch.tensor([0]), val_inferred=torch.tensor([0, 2]))
    assert selection.resolve("auto", unknown) == "val_gi_wga"
    with pytest.raises(ConfigError, match="val_wga"):
        selection.resolve("val_wga", unknown)
    incomplete = EvalLog.start(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 2, 2, [0, 3])
    assert not incomplete.val_groups_complete and selection.resolve("auto", incomplete) == "val_avg"


def test_append_many_equals_append_and_checkpoints_resume(tmp_path):
    gen = torch.Generator().manual_seed(1)
    val_y, val_a = _labels(gen, 30)
    test_y, test_a = _labels(gen, 50, unknown=0.2)
    args = (val_y, val_a, test_y, test_a, K, A, torch.ones(K * A, dtype=torch.bool))
    batched, single = EvalLog.start_many(3, *args), [EvalLog.start(*args) for _ in range(3)]
    resumed: list[EvalLog] = []
    for t in range(5):
        vp = torch.stack([_noisy(gen, val_y, 0.8) for _ in range(3)])
        tp = torch.stack([_noisy(gen, test_y, 0.8) for _ in range(3)])
        inferred = [val_y * 2 + (vp[0] != val_y).long(), None, None if t < 2 else val_y * 2]
        EvalLog.append_many(batched, t, 100 * t, vp, tp, inferred)
        for c in range(3):
            single[c].append(t, 100 * t, vp[c], tp[c], inferred[c])
        if resumed:
            EvalLog.append_many(resumed, t, 100 * t, vp, tp, inferred)
        if t == 2:  # a checkpoint, through torch.save / torch.load(weights_only=True), then a resumed run
            torch.save([log.state_dict() for log in batched], tmp_path / "ckpt.pt")
            resumed = EvalLog.start_many(3, *args)
            for log, state in zip(resumed, torch.load(tmp_path / "ckpt.pt", weights_only=True), strict=True):
                log.load_state_dict(state)
    for b, s, r in zip(batched, single, resumed, strict=True):
        for key, value in b.arrays().items():
            assert np.array_equal(value, s.arrays()[key]) and np.array_equal(value, r.arrays()[key]), key
    assert batched[0].arrays()["val_pred"].dtype == np.int16 and "val_inferred" not in batched[1].arrays()
    assert (batched[2].arrays()["val_inferred"][:2] == -1).all()  # rows without inferred groups
    assert [batched[2].val_inferred_at(t) is None for t in range(5)] == [True, True, False, False, False]
    with pytest.raises(ValueError, match="different data"):
        EvalLog.append_many(
            [batched[0], EvalLog.start(val_y, val_a, test_y.flip(0), test_a, K, A, [0])], 0, 0, vp[:2], tp[:2]
        )


def test_load_rejects_malformed_files(tmp_path):
    log = _tiny_log()
    good = log.arrays()
    assert good["val_groups_complete"] and int(good["test_n"]) == 4
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "test_hits"}, "no field 'test_hits'"),
        "shape": ({**good, "val_pred": good["val_pred"][:, :5]}, "field 'val_pred' has shape"),
        "dtype": ({**good, "epoch": good["epoch"].astype(np.float64)}, "field 'epoch' must be"),
        "inferred": ({**good, "val_inferred": np.zeros((3, 6), np.int64)}, "field 'val_inferred' has shape"),
        "version": ({**good, "version": np.int64(99)}, "newer"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=message) as err:
            EvalLog.load(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable evaluation log"):
        EvalLog.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", **{**good, "epoch": np.array([{}, {}, {}, {}], dtype=object)})
    with pytest.raises(DataError):  # a pickled array is refused, never unpickled
        EvalLog.load(tmp_path / "obj.npz")
    loaded = EvalLog.load(log.save(tmp_path / "ok.npz"))
    with pytest.raises(ValueError, match="no test labels"):
        loaded.append(5, 25, torch.zeros(6, dtype=torch.long), torch.zeros(4, dtype=torch.long))


class _FirstEpoch(Criterion):
    name = "first_epoch"
    description = "the first evaluation"

    def score(self, log: EvalLog, t: int, external_groups: torch.Tensor | None = None) -> float | None:
        return 1.0 if t == 0 else None


def test_registry_adds_criteria_and_refuses_clashes():
    log = _tiny_log()
    register_criterion(_FirstEpoch)
    try:
        assert "first_epoch" in selection.criterion_names() and selection.select(log, "first_epoch") == 0
        register_criterion(_FirstEpoch)  # the same class again: a no-op (a module imported twice)

        class Other(_FirstEpoch):
            pass

        with pytest.raises(ConfigError, match="already registered"):
            register_criterion(Other)
    finally:
        unregister_criterion("first_epoch")
    assert selection.get_criterion(f"{__name__}:_FirstEpoch").name == "first_epoch"  # a plug-in reference
    unregister_criterion("first_epoch")
    with pytest.raises(ConfigError, match="unknown selection criterion 'best'"):
        selection.get_criterion("best")
    with pytest.raises(ConfigError, match="cannot import"):
        selection.get_criterion("memaware.nope:Thing")
    with pytest.raises(ConfigError, match="subclass"):
        selection.get_criterion("memaware.selection:select")
    assert selection.get_criterion("va_gi_wga").val_group_use == "inferred"
    assert [selection.get_criterion(n).val_group_use for n in ("avg", "worst_class", "va_wga")] == ["no", "no", "yes"]
    assert all(math.isfinite(s) for s in selection.scores(log, "avg"))


@pytest.mark.parametrize("own", ["always", "never", "some"])
def test_batched_scores_equal_the_per_evaluation_ones(own):
    """Each built-in's ``score_all`` (one computation over every evaluation) gives exactly ``score``'s floats."""
    for seed in range(3):
        data, gen = _scenario(seed, val_unknown=0.0 if seed else 0.2)
        n_val = int((data.split == 1).sum())
        external = torch.randint(0, 4, (n_val,), generator=gen) if seed != 1 else None
        _, log = _drive(data, gen, own, external)
        for name in ("val_wga", "val_gi_wga", "val_worst_class", "val_avg", "last", "test_wga"):
            crit = selection.get_criterion(name)
            per_t = [crit.score(log, t, external) for t in range(len(log))]
            assert crit.score_all(log, external) == per_t, name
