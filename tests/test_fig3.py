import dataclasses
import json

import pytest
import torch

from memaware.cli import main
from memaware.data.regression import make_setup_c1, paper_function, stack_problems
from memaware.engine import TrainConfig, fit
from memaware.errors import ConfigError
from memaware.experiments.fig3 import noise_reliance, train_problems
from memaware.models import EnsembleMLP


def test_setup_c1_generator():
    p = make_setup_c1(n=20, noise_dim=30, sigma=1e-3, label_noise=0.08, n_sweep=1000, seed=0)
    assert p.x_train.shape == (20, 31) and p.x_sweep.shape == (1000, 31) and p.f_sweep.shape == (1000,)
    xs = p.x_train[:, 0]
    assert xs[0] == pytest.approx(-1.5) and xs[-1] == pytest.approx(1.5)
    assert torch.allclose(xs[1:] - xs[:-1], torch.full((19,), 3.0 / 19), atol=2e-3)  # evenly spaced
    assert torch.all(p.x_sweep[:, 1:] == 0) and torch.allclose(p.f_sweep, paper_function(p.x_sweep[:, 0]))
    assert p.x_train[:, 1:].std().item() == pytest.approx(1e-3, rel=0.15)
    resid = p.y_train - paper_function(xs)
    assert 0.03 < resid.std().item() < 0.15
    q = make_setup_c1(sigma=0.0, seed=0)
    assert torch.equal(p.y_train, q.y_train)  # same label noise for any sigma
    assert torch.allclose(p.x_train[:, 1:] / 1e-3, make_setup_c1(sigma=1.0, seed=0).x_train[:, 1:], atol=1e-5)
    assert torch.all(q.x_train[:, 1:] == 0) and torch.equal(q.x_train_clean, q.x_train)
    with pytest.raises(ConfigError):
        make_setup_c1(sigma=-1.0)


def test_stopping_rule_single_model():
    p = make_setup_c1(n=8, noise_dim=4, sigma=0.1, seed=1)
    data = stack_problems([p])
    cfg = TrainConfig(epochs=5000, lr=1e-2, optimizer="adam", selection="last")
    res = fit(data, "mse", cfg, model=EnsembleMLP(5, [0], hidden=(32,)), target_mse=1e-3)
    steps = res.outputs["steps"][0]
    assert res.outputs["reached_target"] == [True] and res.epochs_run == steps < 5000
    assert res.outputs["train_mse"][0] < 1e-3 and res.history["loss"][-1] < 1e-3
    assert res.history["loss"][-2] >= 1e-3  # it stopped at the first step below the target
    capped = fit(
        data,
        "mse",
        TrainConfig(epochs=10, lr=1e-2, optimizer="adam", selection="last"),
        model=EnsembleMLP(5, [0], hidden=(32,)),
        target_mse=1e-3,
    )
    assert capped.outputs["reached_target"] == [False] and capped.outputs["steps"] == [10]


def test_ensemble_member_equals_its_solo_run():
    probs = [make_setup_c1(n=8, noise_dim=4, sigma=s, seed=2) for s in (0.3, 0.0)]
    cfg = TrainConfig(epochs=3000, lr=1e-2, optimizer="adam", selection="last")
    both = fit(stack_problems(probs), "mse", cfg, model=EnsembleMLP(5, [7, 8], hidden=(16,)), target_mse=1e-2)
    solo = [
        fit(stack_problems([p]), "mse", cfg, model=EnsembleMLP(5, [seed], hidden=(16,)), target_mse=1e-2)
        for p, seed in zip(probs, (7, 8), strict=True)
    ]
    assert both.outputs["steps"] == [s.outputs["steps"][0] for s in solo]
    assert both.outputs["steps"][0] != both.outputs["steps"][1]  # one froze while the other trained on
    for e, s in enumerate(solo):
        for p_both, p_solo in zip(both.model.parameters(), s.model.parameters(), strict=True):
            assert torch.allclose(p_both[e], p_solo[0], atol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_hand_derived_backward_equals_autograd_bit_for_bit(activation):
    """``EnsembleMLP.backward_into`` + ``MSERegression.loss_and_gradient`` give autograd's gradients exactly."""
    from memaware.methods import Batch, make_method

    probs = [make_setup_c1(n=12, noise_dim=6, sigma=s, seed=3) for s in (0.0, 1e-2, 0.5)]
    data = stack_problems(probs)
    x, y = data.x[data.split == 0], data.y[data.split == 0]
    batch = Batch(torch.arange(len(y)), y)
    model = EnsembleMLP(7, [1, 2, 3], hidden=(16, 16), activation=activation)
    method = make_method("mse")
    method.inv_n = None
    auto = method.loss(model(x), batch)
    auto.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))  # every entry must be overwritten
    with torch.no_grad():
        out, saved = model.forward_saving(x)
        loss, grad = method.loss_and_gradient(out, batch)
        model.backward_into(saved, grad)
    assert torch.equal(loss, auto.detach())
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.equal(p.grad, e)


def test_analytic_strategy_takes_the_same_iterates():
    """The Fig. 3 runs through the analytic strategy (flat Adam, no autograd) end where autograd's would: same step
    count, MSE and weights to the bit, for one model and for an ensemble whose members freeze at different steps."""
    probs = [make_setup_c1(n=10, noise_dim=5, sigma=s, seed=4) for s in (1e-3, 0.0, 0.2)]
    cfg = TrainConfig(epochs=4000, lr=1e-2, optimizer="adam", selection="last")
    for group in (probs[:1], probs):
        runs = [
            fit(stack_problems(group), "mse", dataclasses.replace(cfg, analytic=analytic),
                model=EnsembleMLP(6, list(range(len(group))), hidden=(24, 24)), target_mse=1e-3)
            for analytic in (True, False)
        ]  # fmt: skip
        assert runs[0].outputs == runs[1].outputs and runs[0].outputs["reached_target"] == [True] * len(group)
        for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert len(set(runs[0].outputs["steps"])) == 3  # the members froze at different steps


def test_fig3_bad_run_pinned():
    """The paper-size 'bad' run of ``memaware fig3 --seed 123`` (sigma = 1e-3): the step count and final MSE it
    has given since Fig. 3 was built (BENCHMARKS.md), through the analytic strategy."""
    row = train_problems([make_setup_c1(sigma=1e-3, seed=123)], [123])[0]
    assert row["steps"] == 1078 and row["train_mse"] == 9.943872782969265e-07 and row["reached_target"]


def test_noise_reliance_hand_built():
    p = make_setup_c1(n=5, noise_dim=3, sigma=0.5, seed=0)

    def g(x):  # core part plus twice the sum of the noise coordinates
        return x[:, 0] ** 2 + 2 * x[:, 1:].sum(dim=1)

    expected = (2 * p.x_train[:, 1:].sum(dim=1)).abs().mean().item()
    assert noise_reliance(g, p) == pytest.approx(expected, rel=1e-6)
    assert noise_reliance(lambda x: x[:, 0] * 3, p) == 0.0


def test_fig3_runs_and_json_schema(tmp_path, capsys):
    code = main(["fig3", "--out", str(tmp_path), "--max-steps", "40", "--n", "10"])
    out = capsys.readouterr().out
    assert code == 0 and "noise reliance" in out
    res = json.loads((tmp_path / "fig3.json").read_text())
    assert set(res["runs"]) == {"good", "bad", "ugly"} and isinstance(res["seconds"], float)
    for name, sigma in (("good", 1e-4), ("bad", 1e-3), ("ugly", 0.0)):
        run = res["runs"][name]
        assert set(run) >= {"sigma", "train_mse", "reached_target", "steps", "test_mse", "noise_reliance"}
        assert run["sigma"] == sigma and run["steps"] == 40 and run["reached_target"] is False
    assert res["runs"]["ugly"]["noise_reliance"] == 0.0
    assert (tmp_path / "fig3.png").stat().st_size > 10_000


def test_fig3_sweep_small(tmp_path, capsys):
    runs = {}
    for flag in ([], ["--batched"]):
        out = tmp_path / ("batched" if flag else "threads")
        argv = ["fig3", "--sweep", "--out", str(out), "--sigmas", "0", "1e-3", "0.1", "--seeds", "2"]
        code = main([*argv, "--max-steps", "30", "--n", "8", "--quiet", *flag])
        assert code == 0 and capsys.readouterr().out == ""
        res = json.loads((out / "fig3_sweep.json").read_text())
        assert len(res["runs"]) == 6 and res["sigmas"] == [0.0, 1e-3, 0.1] and res["seeds"] == [0, 1]
        assert (out / "fig3_sweep.png").exists()
        runs[bool(flag)] = res["runs"]
    # one model per thread and one ensemble train the same models (no member reaches the target here)
    for a, b in zip(runs[False], runs[True], strict=True):
        assert (a["sigma"], a["seed"], a["steps"]) == (b["sigma"], b["seed"], b["steps"])
        assert a["test_mse"] == pytest.approx(b["test_mse"], rel=1e-3)


def test_fig3_bad_flags(tmp_path, capsys):
    assert main(["fig3", "--out", str(tmp_path), "--sweep", "--sigmas", "-1"]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "fig3_sweep.json").exists()


def test_three_runs_share_init_and_labels():
    res = train_problems(
        [make_setup_c1(n=6, noise_dim=2, sigma=s, seed=3) for s in (0.0, 0.0)],
        [5, 5],
        hidden=(8,),
        max_steps=20,
    )
    assert res[0]["test_mse"] == pytest.approx(res[1]["test_mse"])  # same seed, same data, same init


def test_regression_step_mse_read_from_the_loss():
    """after_step reads the per-member MSE its loss computed on the same logits; without a loss call it computes
    it: the numbers are the same either way."""
    from memaware.methods import Batch, TrainContext, make_method

    data = stack_problems([make_setup_c1(n=8, noise_dim=4, sigma=s, seed=3) for s in (0.1, 0.0)])
    ctx = TrainContext(data, torch.arange(len(data)), TrainConfig(selection="last"), torch.Generator())
    logits = torch.randn(len(data), 2, 1, generator=torch.Generator().manual_seed(0), requires_grad=True)
    batch = Batch(torch.arange(len(data)), data.y)
    mse = []
    for call_loss in (True, False):
        method = make_method("mse", target_mse=1e-3)
        method.prepare(ctx, {})
        if call_loss:
            method.loss(logits, batch).backward()
        method.after_step(logits.detach(), batch, EnsembleMLP(5, [0, 1], hidden=(4,)))
        mse.append(method.last_mse)
    expected = (logits.detach()[:, :, 0] - data.y).pow(2).mean(dim=0)
    assert torch.equal(mse[0], mse[1]) and torch.allclose(mse[0], expected)
