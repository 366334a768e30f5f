"""The batched mode of the engine (``memaware.engine.many``): many members trained at once equal each member trained
alone by ``engine.fit`` (on float64 data: the same selected epoch, criterion, reports and evaluation log, weights
within 1e-9), for every built-in method, a plug-in method through the autograd path, and the spec-level API."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comparisons import assert_close

from memaware.engine import TrainConfig, fit
from memaware.engine.many import Member, execute_many, fast_path, group_key, supported, train_many, train_members
from memaware.errors import ConfigError
from memaware.evallog import FILENAME, EvalLog
from memaware.methods import MAT, Batch, HParam, LogUniform, Method, make_method
from memaware.sweep import prepared, runner

HPARAMS = {
    "mat": [{"temperature": 0.1}, {"temperature": 0.01}],
    "groupdro": [{"eta": 0.01}, {"eta": 0.1}],
    "jtt": [{"T": 2, "lambda_up": 5}, {"T": 3, "lambda_up": 20}],
    "lc": [{"q": 0.7, "ema": 0.5, "mixup": True}, {"q": 0.8, "lambda_bias": 0.5, "estimator": "authors"}],
    "ula": [{"probe_steps": 20, "eta": 1.0}, {"probe_steps": 50, "eta": 0.5}],
    "xrm-groupdro": [{"eta": 0.01}, {"eta": 0.1, "train_groups": "held-out"}],
    "dfr": [{"retrains": 2}, {"retrains": 3}],
}
SHAPES = {
    "adam": {"optimizer": "adam", "batch_size": 32},
    "sgd-full": {"optimizer": "sgd", "batch_size": 0, "epochs": 8},
    "mlp": {"optimizer": "adamw", "batch_size": 32, "hidden": (8,), "class_balanced": True, "max_steps": 23,
            "eval_every": 2},
}  # fmt: skip


class Focal(Method):
    """A plug-in method (as a user writes one, tests/test_plugin_method.py): no fast path."""

    name = "focal"
    hparams = {"gamma": HParam(2.0, "focusing exponent", search={"*": LogUniform(-1, 0.5)}, low=0.0)}

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        logp = F.log_softmax(logits[:, 0], dim=1).gather(1, batch.y[:, None]).squeeze(1)
        return (-((1 - logp.exp()) ** self.gamma) * logp).mean()


class Jitter(Method):
    """A plug-in with per-example state changed in ``after_step`` from the run's generator, that may stop early."""

    name = "jitter"
    hparams = {"stop_after": HParam(0, "steps before asking to stop (0: never)", low=0, low_inclusive=True)}

    def prepare(self, ctx, earlier) -> None:
        self.generator = ctx.generator
        self.w = torch.ones(len(ctx.train_idx), dtype=torch.float64)
        self.steps = 0

    def should_stop(self) -> bool:
        return 0 < self.stop_after <= self.steps

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        w = self.w[batch.pos].to(logits.dtype)
        return (F.cross_entropy(logits[:, 0], batch.y, reduction="none") * w).sum() / w.sum()

    @torch.no_grad()
    def after_step(self, logits: torch.Tensor, batch: Batch, model) -> None:
        noise = torch.rand(len(batch.pos), generator=self.generator, dtype=torch.float64)
        self.w[batch.pos] = 0.5 * self.w[batch.pos] + noise
        self.steps += 1

    def state_dict(self) -> dict:
        return {"w": self.w.clone()}


def _members(method: str | type, shape: str = "adam", seeds=(0, 1)) -> list[Member]:
    """2 hyper-parameter combinations x ``seeds``: lr, weight decay, momentum and the method's own differ."""
    kw = {"epochs": 6, **SHAPES[shape]}
    model_kwargs = {"hidden": kw.pop("hidden", ()), "bias": True}
    out = []
    for i, (lr, wd) in enumerate([(1e-2, 1e-4), (3e-3, 0.0)]):
        hp = HPARAMS.get(method, [{}, {}])[i] if isinstance(method, str) else {}
        for s in seeds:
            cfg = TrainConfig(lr=lr, weight_decay=wd, seed=s, momentum=0.9 * (i == 0), **kw)
            m = make_method(method, **hp) if isinstance(method, str) else method()
            out.append(Member(m, cfg, dict(model_kwargs)))
    return out


def _assert_same_run(batched, alone, data) -> None:
    """The run trained batched equals the run trained alone."""
    assert (batched.selection, batched.selected_epoch, batched.epochs_run) == (
        alone.selection, alone.selected_epoch, alone.epochs_run,
    )  # fmt: skip
    assert batched.selection_reports == alone.selection_reports
    for split in ("val", "test"):
        assert batched.evaluate(data, split) == alone.evaluate(data, split)
    ours, theirs = batched.model.state_dict(), alone.model.state_dict()
    assert set(ours) == set(theirs)
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 1e-9
    assert (batched.val_inferred_groups is None) == (alone.val_inferred_groups is None)
    if alone.val_inferred_groups is not None:
        assert torch.equal(batched.val_inferred_groups, alone.val_inferred_groups)
    assert_close(batched.method.describe(), alone.method.describe())  # GroupDRO's q, JTT's error set, ...
    if alone.evaluations is not None:
        a, b = batched.evaluations.arrays(), alone.evaluations.arrays()
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _check_against_fit(data, members) -> None:
    for member, res in zip(members, train_members(data, members), strict=True):
        alone = fit(data, member.method, member.config, model_kwargs=member.model_kwargs,
                    val_inferred_groups=member.external_groups)  # fmt: skip
        _assert_same_run(res, alone, data)
        for name, phase in alone.phases.items():
            _assert_same_run(res.phases[name], phase, data)


@pytest.mark.parametrize(
    "method", ["erm", "groupdro", "rwg", "subg", "jtt", "xrm", "mat", "lc", "ula", "xrm-groupdro", "dfr"]
)
def test_every_method_equals_fit_minibatch_adam(data64, method):
    _check_against_fit(data64, _members(method))


@pytest.mark.parametrize(
    "method", ["erm", "groupdro", "subg", "jtt", "xrm", "mat", "lc", "ula", "xrm-groupdro", "dfr"]
)
def test_every_method_equals_fit_full_batch_sgd_momentum(data64, method):
    _check_against_fit(data64, _members(method, "sgd-full"))


@pytest.mark.parametrize("method", ["xrm", "jtt", "rwg", "groupdro", "mat"])
def test_mlp_class_balance_max_steps_eval_every_adamw_equal_fit(data64, method):
    _check_against_fit(data64, _members(method, "mlp", seeds=(4,)))


@pytest.mark.parametrize("plugin", [Focal, Jitter])
def test_plugin_method_through_the_autograd_path_equals_fit(data64, plugin):
    members = _members(plugin) + _members(plugin, "sgd-full", seeds=(2,))[:1]
    assert fast_path(members[0].method) is None
    _check_against_fit(data64, members[:4])
    _check_against_fit(data64, members[4:])


def test_members_that_ask_to_stop_end_where_fit_ends(data64):
    """A method's ``should_stop`` ends its member alone (evaluated at that epoch, as fit does); the others go on."""
    cfg = TrainConfig(epochs=6, batch_size=40, lr=0.05, eval_every=4)
    members = [Member(Jitter(stop_after=k), dataclasses.replace(cfg, seed=k % 2), {}) for k in (5, 9, 0)]
    _check_against_fit(data64, members)
    assert [r.epochs_run for r in train_members(data64, members)] == [2, 3, 6]


def test_single_run_mat_and_per_member_epochs_and_selections(data64):
    """Single-run MAT (no fast path: its own loss through autograd); members with their own epochs (the program
    runs to the longest, each ends at its own) and criteria; external inferred groups."""
    single = [Member(MAT(mode="single-run", temperature=t), TrainConfig(epochs=4, batch_size=40, lr=0.05, seed=s),
                     {"bias": True}) for t, s in ((0.1, 0), (0.01, 1))]  # fmt: skip
    _check_against_fit(data64, single)
    external = fit(data64, "xrm", TrainConfig(epochs=3, batch_size=40, lr=0.05)).val_inferred_groups
    mixed = []
    for i, (epochs, selection) in enumerate([(3, "val_gi_wga"), (5, "last"), (4, "val_worst_class"), (5, "auto")]):
        cfg = TrainConfig(epochs=epochs, batch_size=40, lr=0.05, seed=i % 2, selection=selection)
        mixed.append(Member(make_method("erm"), cfg, {"bias": False}, external_groups=external))
    _check_against_fit(data64, mixed)


def test_members_of_different_kinds_or_shapes_are_refused(data64):
    a, b = _members("erm")[:2]
    with pytest.raises(ConfigError, match="one method class"):
        train_members(data64, [a, dataclasses.replace(b, config=dataclasses.replace(b.config, batch_size=16))])
    with pytest.raises(ConfigError, match="one method class"):
        train_members(data64, [a, dataclasses.replace(b, method=make_method("rwg"))])
    no_groups = dataclasses.replace(data64, a=torch.where(data64.split == 0, -1, data64.a))
    with pytest.raises(ConfigError, match="training group labels"):
        train_members(no_groups, _members("groupdro")[:1])
    assert train_members(data64, []) == []


# ---- the spec-level API: the same dicts and files as runner.execute --------------------------------------------
@pytest.fixture
def spec_data(data64, tmp_path, monkeypatch):
    """Specs of a features file whose loading gives the float64 data (for runner.execute and execute_many)."""
    path = str(tmp_path / "s21.npz")
    data64.save_npz(path)
    monkeypatch.setattr(runner, "load_spec_data", lambda spec: (data64, None))
    monkeypatch.setattr(prepared, "load_spec_data", lambda spec: (data64, None))  # what execute loads with
    return data64, path


def _specs(method: str, path: str, seeds=(0, 1), **extra) -> list[dict]:
    specs = []
    for i, (lr, wd) in enumerate([(1e-2, 1e-4), (3e-3, 0.0)]):
        hp = {"epochs": 5, "batch_size": 32, "optimizer": "adam", "lr": lr, "weight_decay": wd, "bias": True,
              **HPARAMS.get(method, [{}, {}])[i], **extra}  # fmt: skip
        specs += [{"method": method, "data": path, "seed": s, "hparams": hp} for s in seeds]
    return specs


def _without_time(record: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(record)).items() if k not in ("seconds", "vectorized")}


@pytest.mark.parametrize("method", ["mat", "groupdro", "dfr", "test_vectorized:Focal"])
def test_train_many_gives_runner_execute_results(spec_data, tmp_path, method):
    data, path = spec_data
    specs = _specs(method, path)
    assert all(supported(s) for s in specs) and len({group_key(s) for s in specs}) == 1
    many = train_many(data, specs)
    for i, (spec, rec) in enumerate(zip(specs, many, strict=True)):
        assert rec["vectorized"] and rec["seconds"] > 0
        assert_close(_without_time(rec), _without_time(runner.execute(spec, tmp_path / f"one{i}")))


def test_execute_many_writes_what_execute_writes(spec_data, tmp_path):
    data, path = spec_data
    specs = _specs("xrm", path, seeds=(0,)) + _specs("erm", path, seeds=(1,))
    specs[0]["save_model"] = True
    unsupported = {**specs[2], "hparams": {**specs[2]["hparams"], "no_such": 1}}  # one at a time: it fails
    assert not supported(unsupported)
    dirs = [tmp_path / "vec" / f"r{i}" for i in range(4)]
    results = execute_many(specs, dirs)
    assert [r["vectorized"] for r in results] == [True] * 4
    for i, spec in enumerate(specs):
        one = tmp_path / "one" / f"r{i}"
        ref = runner.execute(spec, one)
        assert_close(_without_time(json.loads((dirs[i] / "results.json").read_text())), _without_time(ref))
        ours, theirs = EvalLog.load(dirs[i] / FILENAME).arrays(), EvalLog.load(one / FILENAME).arrays()
        assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
        assert (dirs[i] / "inferred_groups.npz").exists() == (one / "inferred_groups.npz").exists()
    model = torch.load(dirs[0] / "model.pt", weights_only=True)
    assert set(model) == {"heads.linear.weight", "heads.linear.bias"} and model["heads.linear.weight"].shape[0] == 4
    again = execute_many(specs[:1], dirs[:1])  # finished runs are read back, not trained again
    assert again[0]["seconds"] == results[0]["seconds"]
    with pytest.raises(ConfigError, match="no_such"):
        execute_many([unsupported], [tmp_path / "bad"])


def test_sweep_vectorized_trains_a_plugin_method_batched(data64, tmp_path):
    from memaware.cli import main

    path = str(tmp_path / "s21.npz")  # read as it is (float32), at planning and in the runs alike
    data64.save_npz(path)
    argv = ["sweep", "--data", path, "--methods", "erm,test_vectorized:Focal", "--n-hparams", "2", "--seeds", "2"]
    assert (
        main([*argv, "--set", "epochs=3", "--vectorized", "--jobs", "1", "--out", str(tmp_path / "sw"), "--quiet"]) == 0
    )
    records = [json.loads(p.read_text()) for p in (tmp_path / "sw").rglob("results.json")]
    assert sum(r["method"] == "test_vectorized:Focal" for r in records) == 4 and all(r["vectorized"] for r in records)


def test_inferred_groups_from_a_dict_or_the_specs_file(spec_data, tmp_path):
    data, path = spec_data
    ((xrm, groups, state),) = train_many(data, _specs("xrm", path, seeds=(0,))[:1], with_inferred_groups=True,
                                         keep_models=True)  # fmt: skip
    assert groups is not None and state["heads.linear.weight"].shape == (4, data.dim)
    file = tmp_path / "inferred_groups.npz"
    np.savez(file, val_groups=groups.numpy())
    specs = [{**s, "selection": "val_gi_wga"} for s in _specs("erm", path, seeds=(0,))]
    from_dict = train_many(data, specs, inferred_groups={0: groups})
    from_file = train_many(data, [{**s, "inferred_groups": str(file)} for s in specs])
    assert [r["criteria"] for r in from_dict] == [r["criteria"] for r in from_file]
    assert {r["selection"] for r in from_dict} == {"val_gi_wga"}
    with pytest.raises(ConfigError, match="--inferred-groups"):  # no inferred groups anywhere: refused, not val_avg
        train_many(data, specs)


def test_group_key_and_supported(spec_data):
    data, path = spec_data
    a, b = _specs("erm", path)[0], _specs("erm", path)[-1]
    assert group_key(a) == group_key(b)  # seeds, lr and weight decay may differ
    assert group_key(a) != group_key({**a, "hparams": {**a["hparams"], "batch_size": 64}})
    assert group_key(a) != group_key({**a, "method": "rwg"})
    mat = _specs("mat", path)[0]
    single = {**mat, "hparams": {**mat["hparams"], "mode": "single-run"}}
    assert supported(single) and group_key(single) != group_key(mat)  # autograd path, three heads
    assert supported({**a, "hparams": {**a["hparams"], "hidden": [4, 4]}})  # any MLP (vmap)
    assert not supported({**single, "hparams": {**single["hparams"], "hidden": [4]}})  # its own forward
    assert not supported({"method": "erm", "dataset": "waterbirds", "data_dir": "x"})
    assert not supported({**a, "hparams": {"no_such": 1}})
    assert not supported({**a, "method": "mse"})
    with pytest.raises(ConfigError, match="one method, data and shape"):
        train_many(data, [a, {**a, "hparams": {**a["hparams"], "epochs": 3}}])
    assert train_many(data, []) == []
