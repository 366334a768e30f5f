"""``vectorized.train_many``: many runs in one batched program give the results ``runner.execute`` gives one at a
time (the same batches, flips and initial weights; GEMMs blocked differently, so equal up to float rounding)."""

import json
import statistics

import numpy as np
import pytest
import torch

from memaware.data import make_setup21
from memaware.errors import ConfigError
from memaware.metrics import group_report
from memaware.runner import execute
from memaware.vectorized import _Reports, execute_many, group_key, supported, train_many

METHOD_HPARAMS = {
    "mat": [{"temperature": 0.1}, {"temperature": 0.01}],
    "groupdro": [{"eta": 0.01}, {"eta": 0.1}],
    "jtt": [{"T": 2, "lambda_up": 5}, {"T": 3, "lambda_up": 20}],
}
COMPARED = ("selection", "selected_epoch", "val", "test", "criteria", "epochs_run")


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """A small Setup 2.1 problem (paper Sec. 2) saved as a features file."""
    data = make_setup21(n_train=160, n_val=160, n_test=200, noise_dim=60, sigma=0.5, rho_train=0.9, seed=3)
    path = tmp_path_factory.mktemp("vec") / "setup21.npz"
    data.save_npz(path)
    return data, str(path)


def _specs(method: str, path: str, seeds=(0, 1), **shape) -> list[dict]:
    """2 hyper-parameter combinations x ``seeds``, with lr, weight decay and method hparams differing."""
    specs = []
    for i, (lr, wd) in enumerate([(1e-2, 1e-4), (3e-3, 0.0)]):
        extra = METHOD_HPARAMS.get(method, [{}, {}])[i]
        hp = {"epochs": 6, "batch_size": 32, "optimizer": "adam", "lr": lr, "weight_decay": wd, "bias": True, **extra,
              **shape}  # fmt: skip
        if hp["optimizer"] == "sgd":
            hp["momentum"] = 0.9 if i == 0 else 0.0
        specs += [{"method": method, "data": path, "seed": s, "hparams": hp} for s in seeds]
    return specs


def _one_by_one(specs: list[dict], tmp_path) -> list[dict]:
    return [execute(s, tmp_path / f"run{i}") for i, s in enumerate(specs)]


def _check_close(vec: list[dict], one: list[dict]) -> None:
    """Mostly identical, always close: selected test worst-group accuracy per run, and its mean over runs."""
    identical = sum(all(v[k] == o[k] for k in COMPARED) for v, o in zip(vec, one, strict=True))
    assert identical >= 0.75 * len(vec), f"only {identical}/{len(vec)} runs identical"
    vw = [v["test"]["worst_group_acc"] for v in vec]
    ow = [o["test"]["worst_group_acc"] for o in one]
    assert max(abs(a - b) for a, b in zip(vw, ow, strict=True)) <= 0.1
    assert abs(statistics.mean(vw) - statistics.mean(ow)) <= 0.02
    for v, o in zip(vec, one, strict=True):
        assert v["vectorized"] and set(o) <= set(v)
        assert v["spec"] == o["spec"] and v["method"] == o["method"] and v["data"] == o["data"]
        assert v["uses_train_groups"] == o["uses_train_groups"] and v["uses_val_groups"] == o["uses_val_groups"]
        assert v["resumed_from"] is None and v["seconds"] > 0
        assert set(v["hparams"]) == set(o["hparams"])
        for key, value in o["hparams"].items():
            if key == "group_weights":  # GroupDRO's q: float64, equal up to the logits' rounding
                assert v["hparams"][key] == pytest.approx(value, abs=1e-4)
            else:
                assert v["hparams"][key] == value, key


@pytest.mark.parametrize("method", ["erm", "xrm", "mat", "groupdro", "rwg", "subg", "jtt"])
def test_minibatch_adam_matches_one_at_a_time(problem, tmp_path, method):
    data, path = problem
    specs = _specs(method, path)
    _check_close(train_many(data, specs), _one_by_one(specs, tmp_path))


@pytest.mark.parametrize("method", ["erm", "xrm", "mat", "groupdro", "subg", "jtt"])
def test_full_batch_sgd_with_momentum_matches(problem, tmp_path, method):
    data, path = problem
    specs = _specs(method, path, batch_size=0, optimizer="sgd", epochs=8)
    _check_close(train_many(data, specs), _one_by_one(specs, tmp_path))


@pytest.mark.parametrize("method", ["xrm", "jtt", "rwg"])
def test_mlp_class_balance_max_steps_eval_every_adamw(problem, tmp_path, method):
    data, path = problem
    shape = {"optimizer": "adamw", "hidden": [8], "class_balanced": True, "max_steps": 23, "eval_every": 2}
    specs = _specs(method, path, seeds=(4,), **shape)
    vec = train_many(data, specs)
    _check_close(vec, _one_by_one(specs, tmp_path))
    assert all(v["epochs_run"] == 5 for v in vec)  # 5 steps per epoch: max_steps stops the loop in epoch 5


def test_distribution_over_seeds(problem, tmp_path):
    """Identical in distribution: over 6 seeds, per-run and mean selected test worst-group accuracy agree."""
    data, path = problem
    specs = [
        {"method": "mat", "data": path, "seed": s, "hparams": {"epochs": 5, "lr": 1e-2, "batch_size": 64}}
        for s in range(6)
    ]
    _check_close(train_many(data, specs), _one_by_one(specs, tmp_path))


def test_selection_criteria_and_inferred_groups(problem, tmp_path):
    """val_gi_wga with an XRM run's inferred groups (a dict, or the spec's file), 'last' and val_worst_class."""
    data, path = problem
    xrm = _specs("xrm", path, seeds=(0,))[:1]
    ((xrm_res, groups, state),) = train_many(data, xrm, with_inferred_groups=True, keep_models=True)
    one = execute(xrm[0], tmp_path / "xrm")
    assert xrm_res["test"] == one["test"]
    with np.load(tmp_path / "xrm" / "inferred_groups.npz") as f:
        assert np.array_equal(f["val_groups"], groups.numpy())
    assert state["heads.linear.weight"].shape == (4, data.dim)  # two heads x two classes

    specs, groups_file = [], str(tmp_path / "xrm" / "inferred_groups.npz")
    for selection in ("val_gi_wga", "last", "val_worst_class"):
        for s in _specs("erm", path, seeds=(0,)):
            specs.append({**s, "selection": selection, "inferred_groups": groups_file})
    vec = train_many(data, specs)
    assert [v["selection"] for v in vec] == ["val_gi_wga"] * 2 + ["last"] * 2 + ["val_worst_class"] * 2
    _check_close(vec, _one_by_one(specs, tmp_path))
    # the same groups passed as a {seed: groups} dict instead of the spec's file
    plain = [{k: v for k, v in s.items() if k != "inferred_groups"} for s in specs[:2]]
    from_dict = train_many(data, plain, inferred_groups={0: groups})
    assert [r["criteria"] for r in from_dict] == [r["criteria"] for r in vec[:2]]
    # without any inferred groups val_gi_wga falls back to val_avg, as tracking.Selector does
    assert {r["selection"] for r in train_many(data, plain)} == {"val_avg"}


def test_execute_many_writes_what_execute_writes(problem, tmp_path):
    data, path = problem
    specs = _specs("xrm", path, seeds=(0,)) + _specs("erm", path, seeds=(1,))
    specs[0]["save_model"] = True
    unsupported = {**specs[2], "hparams": {**specs[2]["hparams"], "hidden": [4, 4]}}  # two hidden layers
    assert not supported(unsupported)
    dirs = [tmp_path / "vec" / f"r{i}" for i in range(5)]
    results = execute_many(specs + [unsupported], dirs)
    assert len(results) == 5 and all((d / "results.json").is_file() for d in dirs)
    assert [r.get("vectorized", False) for r in results] == [True] * 4 + [False]
    assert (dirs[0] / "inferred_groups.npz").is_file() and (dirs[0] / "model.pt").is_file()
    assert not (dirs[2] / "inferred_groups.npz").exists()  # ERM without external groups infers none
    ref = execute(specs[0], tmp_path / "ref")
    saved = json.loads((dirs[0] / "results.json").read_text())
    assert saved["test"] == json.loads(json.dumps(ref["test"]))
    model = torch.load(dirs[0] / "model.pt", weights_only=True)
    assert set(model) == {"heads.linear.weight", "heads.linear.bias"}
    # finished runs are read back, not trained again
    again = execute_many(specs[:1], dirs[:1])
    assert again[0]["seconds"] == saved["seconds"]


def test_group_key_and_supported(problem):
    data, path = problem
    a, b = _specs("erm", path)[0], _specs("erm", path)[-1]
    assert group_key(a) == group_key(b)  # seeds, lr and weight decay may differ
    assert group_key(a) != group_key({**a, "hparams": {**a["hparams"], "batch_size": 64}})
    assert group_key(a) != group_key({**a, "method": "rwg"})
    assert supported(a) and not supported({**a, "method": "mat", "hparams": {"mode": "single-run"}})
    assert not supported({"method": "erm", "dataset": "waterbirds", "data_dir": "x"})
    assert not supported({**a, "hparams": {"no_such": 1}})
    with pytest.raises(ConfigError, match="one method, data and shape"):
        train_many(data, [a, {**a, "hparams": {**a["hparams"], "epochs": 3}}])
    with pytest.raises(ConfigError, match="training group labels"):
        no_groups = type(data)(data.x, data.y, torch.where(data.split == 0, -1, data.a), data.split, 2, 2)
        train_many(no_groups, [{**a, "method": "groupdro"}])
    assert train_many(data, []) == []


def test_reports_equal_group_report():
    g = torch.Generator().manual_seed(0)
    y, a = torch.randint(0, 3, (500,), generator=g), torch.randint(-1, 2, (500,), generator=g)
    pred = torch.randint(0, 3, (4, 500), generator=g)
    pred[3] = y  # a perfect member
    reports = _Reports(pred, y, a, 3, 2)
    for c in range(4):
        assert reports[c] == group_report(pred[c], y, a, 3, 2)


def test_argmax_by_comparisons_and_flip_uniforms_drawn_per_epoch():
    from memaware.vectorized import _argmax

    t = torch.randint(0, 3, (5, 4, 3, 50)).float()  # many ties: the first maximum wins, as torch.argmax
    for dim in (1, 2):
        assert torch.equal(_argmax(t, dim), t.argmax(dim))
    # XRM's per-step torch.rand draws equal one per-epoch draw split at the batch boundaries (what train_many uses)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    per_step = torch.cat([torch.rand(b, generator=g1) for b in (128, 128, 44)])
    assert torch.equal(per_step, torch.rand(300, generator=g2))
