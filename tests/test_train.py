import pytest
import torch

from memaware import TrainConfig, fit, make_setup21
from memaware.errors import ConfigError

CFG = TrainConfig(epochs=400, lr=3e-2, selection="last", history_splits=("test",))


def _minority_test(result, data):
    return result.history["test"]["minority"][-1]


def test_erm_memorizes_and_mat_generalizes(small_noisy):
    erm = fit(small_noisy, "erm", CFG)
    mat = fit(small_noisy, "mat", CFG, temperature=0.1)
    assert erm.history["train"]["minority"][-1] == 1.0  # ERM fits the minority ...
    assert _minority_test(erm, small_noisy) < 0.4  # ... by memorizing it
    assert _minority_test(mat, small_noisy) > 0.8
    assert mat.outputs["heldout_logits"].shape == (400, 2)
    # XRM's held-out predictions follow the spurious attribute a
    tr = small_noisy.indices(0)
    agree_a = (mat.outputs["heldout_logits"].argmax(1) == small_noisy.a[tr]).float().mean()
    assert agree_a > 0.95


def test_single_run_mat(small_noisy):
    mat = fit(small_noisy, "mat", CFG, temperature=0.1, mode="single-run")
    assert mat.model.heads.num_heads == 3
    assert _minority_test(mat, small_noisy) > 0.8
    assert 0.05 < mat.outputs["flipped_fraction"] < 0.2


def test_single_run_mat_with_mlp_keeps_twins_off_the_backbone(small_noisy):
    cfg = TrainConfig(epochs=2, lr=1e-2, selection="last")
    res = fit(small_noisy, "mat", cfg, model_kwargs={"hidden": (16,)}, mode="single-run")
    method, model = res.method, res.model
    x = small_noisy.x[:8]
    logits = method.forward(model, x)
    loss_ab = logits[:, :2].sum()
    model.zero_grad()
    loss_ab.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.backbone_parameters())
    assert model.heads.linear.weight.grad[:4].abs().sum() > 0  # heads A and B learn


def test_same_seed_same_numbers(small_noisy):
    cfg = TrainConfig(epochs=30, lr=1e-2, batch_size=64, seed=5)
    r1, r2 = fit(small_noisy, "mat", cfg), fit(small_noisy, "mat", cfg)
    assert r1.history == r2.history and r1.selected_epoch == r2.selected_epoch
    assert torch.equal(r1.model.heads.linear.weight, r2.model.heads.linear.weight)
    r3 = fit(small_noisy, "mat", TrainConfig(epochs=30, lr=1e-2, batch_size=64, seed=6))
    assert not torch.equal(r1.model.heads.linear.weight, r3.model.heads.linear.weight)


def test_selection_on_validation(small_noisy):
    res = fit(small_noisy, "erm", TrainConfig(epochs=200, lr=1e-2))
    assert res.selection == "val_wga"
    val = res.evaluate(small_noisy, "val")
    # the chosen checkpoint is the best validation worst-group accuracy seen (checked against a replay)
    replay = fit(small_noisy, "erm", TrainConfig(epochs=res.selected_epoch, lr=1e-2, selection="last"))
    assert replay.evaluate(small_noisy, "val")["worst_group_acc"] == pytest.approx(val["worst_group_acc"])


def test_selection_with_inferred_groups_when_validation_has_no_attributes(small_noisy):
    data = type(small_noisy)(
        **{**small_noisy.__dict__, "a": torch.where(small_noisy.split == 0, small_noisy.a, -1)}
    )
    res = fit(data, "mat", TrainConfig(epochs=100, lr=1e-2))
    assert res.selection == "val_gi_wga"
    assert res.val_inferred_groups.shape == (400,)
    with pytest.raises(ConfigError, match="needs validation attributes"):
        fit(data, "erm", TrainConfig(epochs=2, selection="val_wga"))
    assert fit(data, "erm", TrainConfig(epochs=2)).selection == "val_avg"


def test_history_matches_a_separate_evaluation(small_noisy):
    cfg = TrainConfig(epochs=5, lr=1e-2, selection="last", history_splits=("test", "val"))
    res = fit(small_noisy, "erm", cfg)
    assert res.history["epoch"] == [1, 2, 3, 4, 5] and len(res.history["test"]["minority"]) == 5
    replay = fit(small_noisy, "erm", TrainConfig(epochs=5, lr=1e-2, selection="last"))
    test = replay.evaluate(small_noisy, "test")
    n_min = sum(g["n"] for k, g in test["groups"].items() if k in ("y=0,a=1", "y=1,a=0"))
    acc_min = sum(g["n"] * g["acc"] for k, g in test["groups"].items() if k in ("y=0,a=1", "y=1,a=0")) / n_min
    assert res.history["test"]["minority"][-1] == pytest.approx(acc_min, abs=1e-6)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"lr": 0}, {"optimizer": "lbfgs"}, {"batch_size": -1}])
def test_config_validation(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_three_class_problem():
    data = make_setup21(n_train=900, n_val=450, n_test=450, noise_dim=600, num_classes=3, seed=0)
    erm = fit(data, "erm", TrainConfig(epochs=400, lr=1e-2))
    mat = fit(data, "mat", TrainConfig(epochs=400, lr=1e-2), temperature=0.1)
    assert (
        mat.evaluate(data, "test")["worst_group_acc"] >= erm.evaluate(data, "test")["worst_group_acc"] + 0.4
    )


@pytest.mark.parametrize(
    "method, kwargs, cfg_kwargs",
    [
        ("erm", {}, {"weight_decay": 1e-2, "selection": "last", "history_splits": ("test",)}),
        ("xrm", {}, {"selection": "last"}),
        ("mat", {"temperature": 0.1}, {"selection": "auto", "history_splits": ("val",)}),
        ("mat", {"mode": "single-run"}, {"selection": "last", "history_splits": ("test",)}),
    ],
)
def test_dual_gram_path_matches_the_primal_path(small_noisy, method, kwargs, cfg_kwargs):
    """Full-batch SGD of a linear model through the Gram matrix gives the same iterates (memaware.engine.dual)."""
    runs = [
        fit(small_noisy, method, TrainConfig(epochs=60, lr=3e-2, dual=dual, **cfg_kwargs), **kwargs)
        for dual in (True, False)
    ]
    w_dual, w_primal = (r.model.heads.linear.weight for r in runs)
    assert torch.allclose(w_dual, w_primal, atol=1e-4, rtol=1e-4)
    assert runs[0].history["loss"] == pytest.approx(runs[1].history["loss"], rel=1e-4)
    for split in ("train", *cfg_kwargs.get("history_splits", ())):
        for name, curve in runs[0].history[split]["groups"].items():
            assert curve == pytest.approx(runs[1].history[split]["groups"][name], abs=3e-3)
    assert runs[0].selected_epoch == runs[1].selected_epoch
