"""Head initialisation (``TrainConfig.init``: torch's rule or the authors' zeros) and evaluation every N optimiser
steps (``TrainConfig.eval_every_steps``: the authors evaluate every 50 steps), in ``fit``, the batched mode, the
sweep runner and the CLI (``memaware train``, ``memaware sweep --set``, ``memaware table --selection``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memaware.cli import main
from memaware.data.groups import TRAIN
from memaware.engine import TrainConfig, fit
from memaware.engine.loop import evaluation_due, step_evaluation_due
from memaware.engine.many import Member, train_members
from memaware.errors import ConfigError
from memaware.evallog import FILENAME, EvalLog
from memaware.methods import make_method
from memaware.models import build_model, init_heads_
from memaware.sweep.hparams import parse_override, sample_hparams


def test_zero_init_one_full_batch_step_is_minus_lr_times_the_gradient_at_zero(data64):
    """From zero weights, one full-batch gradient step of cross-entropy gives W = -lr (softmax(0) - Y)^T X / n,
    whatever the seed; torch's default rule depends on the seed."""
    lr = 0.5
    cfg = TrainConfig(epochs=1, lr=lr, optimizer="sgd", batch_size=0, init="zeros", selection="last")
    x, y = data64.x[data64.indices(TRAIN)], data64.y[data64.indices(TRAIN)]
    onehot = F.one_hot(y, data64.num_classes).double()
    expected = -lr * (torch.full_like(onehot, 1 / data64.num_classes) - onehot).T @ x / len(y)
    weights = []
    for seed in (0, 1):
        for dual in (True, False):  # the Gram-matrix path and the primal step
            res = fit(data64, "erm", dataclasses.replace(cfg, seed=seed, dual=dual))
            weights.append(res.model.heads.linear.weight.detach())
    for w in weights:
        torch.testing.assert_close(w, expected, rtol=1e-10, atol=1e-12)
    w0 = fit(data64, "erm", dataclasses.replace(cfg, init="default", seed=0)).model.heads.linear.weight
    w1 = fit(data64, "erm", dataclasses.replace(cfg, init="default", seed=1)).model.heads.linear.weight
    assert not torch.allclose(w0, w1)


def test_init_heads_zeroes_only_the_heads():
    model = build_model(6, 3, num_heads=2, hidden=(5,), bias=True, seed=0)
    hidden_before = model.backbone[0].weight.clone()
    init_heads_(model, "zeros")
    assert all(bool((p == 0).all()) for p in model.heads.parameters())
    assert torch.equal(model.backbone[0].weight, hidden_before) and bool(hidden_before.abs().sum() > 0)
    with pytest.raises(ConfigError, match="init 'zeros' needs a model with linear heads"):
        init_heads_(torch.nn.Linear(3, 2), "zeros")
    with pytest.raises(ConfigError, match="init must be one of default, zeros"):
        TrainConfig(init="xavier")


def test_xrm_from_zero_heads_still_diverges(data64):
    """XRM's twin heads start equal at zero and part ways by training on their own halves."""
    cfg = TrainConfig(epochs=5, lr=1e-2, optimizer="adam", batch_size=32, init="zeros", selection="last")
    res = fit(data64, "xrm", cfg)
    w = res.model.heads.linear.weight.view(2, data64.num_classes, -1)
    assert not torch.allclose(w[0], w[1])


def test_evaluation_cadence_rules():
    # by epochs: every eval_every, the last one and an early stop
    assert [e for e in range(1, 8) if evaluation_due(e, 7, 3, False)] == [3, 6, 7]
    # by steps: an epoch's end only when training ends there and that step was not just evaluated
    assert not evaluation_due(3, 7, 1, False, eval_every_steps=5)
    assert evaluation_due(7, 7, 1, False, eval_every_steps=5) and evaluation_due(2, 7, 1, True, eval_every_steps=5)
    assert not evaluation_due(7, 7, 1, False, eval_every_steps=5, evaluated_now=True)
    assert [s for s in range(0, 21) if step_evaluation_due(s, 5)] == [5, 10, 15, 20]
    assert not any(step_evaluation_due(s, 0) for s in range(10))


def _steps(log: EvalLog) -> list[int]:
    return log.stacked("step").tolist()


@pytest.mark.parametrize("method", ["erm", "mat"])
def test_eval_every_steps_in_fit_and_in_the_batched_mode(data64, method):
    """160 training rows in batches of 32: 5 steps an epoch, 3 epochs = 15 steps. Every 4 steps: evaluations after
    steps 4, 8, 12 (mid-epoch) and 15 (the end); the batched mode logs the same evaluations with the same
    predictions and selects the same one."""
    cfg = TrainConfig(epochs=3, lr=1e-2, optimizer="adam", batch_size=32, eval_every_steps=4, init="zeros", seed=1)
    alone = fit(data64, method, cfg)
    assert _steps(alone.evaluations) == [4, 8, 12, 15]
    assert alone.evaluations.stacked("epoch").tolist() == [1, 2, 3, 3]
    member = Member(make_method(method), cfg)
    other = dataclasses.replace(member, config=dataclasses.replace(cfg, seed=2))
    batched = train_members(data64, [member, other])[0]
    assert _steps(batched.evaluations) == [4, 8, 12, 15]
    assert np.array_equal(batched.evaluations.stacked("val_pred"), alone.evaluations.stacked("val_pred"))
    assert batched.selected_epoch == alone.selected_epoch
    torch.testing.assert_close(batched.model.heads.linear.weight, alone.model.heads.linear.weight, rtol=0, atol=1e-9)
    # a step count that is a multiple of the cadence is evaluated once, not again at the end
    again = fit(data64, "erm", dataclasses.replace(cfg, eval_every_steps=5))
    assert _steps(again.evaluations) == [5, 10, 15]


def test_zero_init_in_the_batched_mode_equals_fit(data64):
    cfg = TrainConfig(epochs=4, lr=1e-2, optimizer="adam", batch_size=32, init="zeros")
    members = [Member(make_method("erm"), dataclasses.replace(cfg, seed=s, init=i)) for s, i in
               ((0, "zeros"), (1, "zeros"), (0, "default"))]  # fmt: skip
    results = train_members(data64, members)
    for member, res in zip(members, results, strict=True):
        ref = fit(data64, "erm", member.config)
        torch.testing.assert_close(res.model.heads.linear.weight, ref.model.heads.linear.weight, rtol=0, atol=1e-9)
    # zero heads: two seeds differ only in the data order
    assert not torch.allclose(results[0].model.heads.linear.weight, results[2].model.heads.linear.weight)


def test_config_refusals(data64):
    with pytest.raises(ConfigError, match="eval_every_steps must be >= 0"):
        TrainConfig(eval_every_steps=-1)
    with pytest.raises(ConfigError, match="history curves are per epoch"):
        TrainConfig(eval_every_steps=5, history_splits=("val",))
    with pytest.raises(ConfigError, match="apply to end-to-end runs"):
        fit(data64, "erm", TrainConfig(epochs=1, clip_grad_norm=1.0))
    with pytest.raises(ConfigError, match="apply to end-to-end runs"):
        train_members(data64, [Member(make_method("erm"), TrainConfig(epochs=1, head_dropout=0.1))])
    with pytest.raises(ConfigError, match=r"head_dropout must be in \[0, 1\)"):
        TrainConfig(head_dropout=1.0)


def _npz(tmp_path, data) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, x=data.x.float().numpy(), y=data.y.numpy(), a=data.a.numpy(), split=data.split.numpy())
    return str(path)


def test_cli_train_and_sweep_take_init_and_eval_every_steps(tmp_path, data64, capsys):
    data = _npz(tmp_path, data64)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--method", "erm", "--optimizer", "adam", "--lr", "0.01", "--batch-size", "32",
            "--epochs", "3", "--eval-every-steps", "4", "--init", "zeros", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["hparams"]["init"] == "zeros" and res["hparams"]["eval_every_steps"] == 4
    assert _steps(EvalLog.load(out / FILENAME)) == [4, 8, 12, 15]
    with pytest.raises(SystemExit) as bad:
        main([*args[:-3], "--init", "ones", "--out", str(out), "--quiet"])
    assert bad.value.code == 2 and "--init" in capsys.readouterr().err
    # a sweep fixes both for every combination; the table re-selects among the step-wise evaluations
    assert parse_override("init=default") == ("init", "default")
    assert parse_override("eval_every_steps=50") == ("eval_every_steps", 50)
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--data", data, "--methods", "erm", "--n-hparams", "1", "--seeds", "1", "--set", "epochs=2",
                 "--set", "eval_every_steps=3", "--set", "batch_size=32", "--no-inferred-groups", "--out", str(sweep),
                 "--quiet"]) == 0  # fmt: skip
    (run_dir,) = [p.parent for p in sweep.rglob("results.json")]
    run = json.loads((run_dir / "results.json").read_text())
    assert run["hparams"]["init"] == "zeros"  # the features family's default: the authors' zero heads
    assert _steps(EvalLog.load(run_dir / FILENAME)) == [3, 6, 9, 10]
    for criterion in ("val_wga", "last"):
        assert main(["table", "--sweep", str(sweep), "--selection", criterion, "--format", "json", "--no-plot"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["cells"][0]["chosen"][0]["epoch"] in (1, 2)
    assert sample_hparams("erm", "features", 3)["init"] == "zeros"
