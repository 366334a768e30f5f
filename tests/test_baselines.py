"""Group-robust baselines (GroupDRO, RWG, SUBG, JTT), class-balanced batches, every-criterion selection and
checkpoint/resume of the training loop."""

import pytest
import torch

from memaware.data import GroupData, make_setup21
from memaware.engine import TrainConfig, epoch_batches, fit
from memaware.errors import ConfigError
from memaware.methods import method_class
from memaware.methods.balancing import inverse_frequency_weights, subsample_to_smallest
from memaware.methods.groupdro import exponentiated_step, group_mean_losses
from memaware.methods.jtt import upweight

CFG = TrainConfig(epochs=30, lr=1e-2, optimizer="adam", batch_size=64, seed=0)


@pytest.fixture(scope="module")
def spurious():
    """Setup 2.1 with 5% minority and memorizable noise: ERM's worst group collapses."""
    return make_setup21(n_train=600, n_val=300, n_test=600, noise_dim=300, sigma=0.5, rho_train=0.95, seed=0)


def test_inverse_frequency_weights_give_every_value_equal_mass():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    w = inverse_frequency_weights(labels)
    mass = torch.zeros(3, dtype=w.dtype).index_add_(0, labels, w)
    assert torch.allclose(mass, torch.ones(3, dtype=w.dtype))


def test_subsample_keeps_smallest_count_per_group():
    labels = torch.tensor([0] * 10 + [1] * 3 + [3] * 5)
    keep = subsample_to_smallest(labels, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[keep]).tolist() == [3, 3, 0, 3]
    assert len(set(keep.tolist())) == len(keep) and keep.tolist() == sorted(keep.tolist())


def test_groupdro_weights_move_toward_the_worst_group():
    losses = torch.tensor([0.1, 0.2, 2.0, 1.0])
    means, present = group_mean_losses(losses, torch.tensor([0, 0, 1, 3]), 4)
    assert torch.allclose(means, torch.tensor([0.15, 2.0, 0.0, 1.0])) and present.tolist() == [1, 1, 0, 1]
    q = exponentiated_step(torch.full((4,), 0.25, dtype=torch.float64), means.double(), present, eta=1.0)
    assert abs(float(q.sum()) - 1) < 1e-12 and int(q.argmax()) == 1
    assert q[2] < 0.25  # an absent group keeps its unnormalised weight, so it loses mass


def test_upweight_and_weighted_sampling():
    w = upweight(torch.tensor([True, False, False, False]), 9.0)
    assert w.tolist() == [9.0, 1.0, 1.0, 1.0]
    batches = epoch_batches(4, 1000, torch.Generator().manual_seed(0), w, None)
    drawn = torch.cat(batches)
    assert len(drawn) == 4  # an epoch draws as many positions as the training set holds
    many = torch.cat([torch.cat(epoch_batches(4, 8, torch.Generator().manual_seed(s), w, None)) for s in range(2000)])
    assert abs(float((many == 0).float().mean()) - 0.75) < 0.02  # 9 / (9 + 3)


@pytest.mark.parametrize("method", ["groupdro", "rwg", "subg"])
def test_group_methods_refuse_data_without_training_groups(spurious, method):
    no_train_attrs = GroupData(
        spurious.x, spurious.y, torch.where(spurious.split == 0, -1, spurious.a), spurious.split, 2, 2
    )
    with pytest.raises(ConfigError, match=f"method '{method}' needs training group labels"):
        fit(no_train_attrs, method, CFG)


def test_baselines_beat_erm_on_worst_group(spurious):
    wga = {}
    for method, kwargs in [("erm", {}), ("rwg", {}), ("subg", {}), ("groupdro", {"eta": 0.1}), ("mat", {})]:
        result = fit(spurious, method, CFG, **kwargs)
        wga[method] = result.evaluate(spurious, "test")["worst_group_acc"]
        # the chosen checkpoint is the val_wga one and its stored test report equals a fresh evaluation
        assert result.selection == "val_wga"
        assert result.selection_reports["val_wga"]["test"]["worst_group_acc"] == pytest.approx(wga[method])
    assert wga["erm"] < 0.3
    for method in ("rwg", "subg", "groupdro", "mat"):
        assert wga[method] >= wga["erm"] + 0.1, wga


def test_every_criterion_is_reported(spurious):
    result = fit(spurious, "mat", CFG)
    reports = result.selection_reports
    assert set(reports) == {"val_wga", "val_gi_wga", "val_worst_class", "val_avg"}
    for c in reports.values():
        assert 1 <= c["epoch"] <= CFG.epochs and 0 <= c["val_score"] <= 1
        assert set(c["test"]) >= {"avg_acc", "worst_group_acc", "worst_class_acc", "groups"}
    # ERM infers no groups: val_gi_wga appears only with an XRM run's groups
    assert "val_gi_wga" not in fit(spurious, "erm", CFG).selection_reports
    groups = result.val_inferred_groups
    erm = fit(spurious, "erm", CFG, val_inferred_groups=groups)
    assert "val_gi_wga" in erm.selection_reports


def test_jtt_error_set_and_class_balance(spurious):
    result = fit(spurious, "jtt", CFG, T=2, lambda_up=10.0)
    errors = result.method.error_set
    assert errors.dtype == torch.bool and 0 < int(errors.sum()) < len(errors)
    assert result.method.describe()["error_set_size"] == int(errors.sum())
    balanced = fit(spurious, "erm", TrainConfig(**{**CFG.__dict__, "class_balanced": True}))
    assert balanced.evaluate(spurious, "test")["worst_class_acc"] > 0


class Interrupt(Exception):
    pass


def _interrupting(method_name: str, after_steps: int, **kwargs):
    """The method as a subclass that raises after ``after_steps`` steps of its own run (fit trains a fresh copy
    of what it is given, so the hook must live on the class, not on one instance)."""
    count = [0]
    base = method_class(method_name)

    class Interrupting(base):  # type: ignore[misc, valid-type]
        def after_step(self, *args):
            super().after_step(*args)
            count[0] += 1
            if count[0] == after_steps:
                raise Interrupt

    return Interrupting(**kwargs)


@pytest.mark.parametrize(
    "method,kwargs",
    [("erm", {}), ("xrm", {}), ("groupdro", {"eta": 0.1}), ("mat", {}), ("mat", {"mode": "single-run"}),
     ("jtt", {"T": 2})],
)  # fmt: skip
def test_resume_after_interrupt_gives_identical_results(spurious, tmp_path, method, kwargs):
    cfg = TrainConfig(epochs=6, lr=1e-2, optimizer="adam", batch_size=100, seed=3)
    whole = fit(spurious, method, cfg, **kwargs)
    ckpt = tmp_path / "checkpoint.pt"
    # MAT two-phase and JTT train a first model in prepare (not interrupted here): 6 epochs x 6 steps, stop at 20
    with pytest.raises(Interrupt):
        fit(spurious, _interrupting(method, 20, **kwargs), cfg, checkpoint=ckpt, checkpoint_every=1)
    assert ckpt.exists()
    resumed = fit(spurious, method, cfg, checkpoint=ckpt, checkpoint_every=1, **kwargs)
    assert resumed.resumed_from == 3
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert whole.selection_reports == resumed.selection_reports
    assert whole.history == resumed.history
    if method in ("xrm", "mat"):
        assert torch.equal(whole.outputs["heldout_logits"], resumed.outputs["heldout_logits"])


def test_checkpoint_of_another_run_is_refused(spurious, tmp_path):
    ckpt = tmp_path / "c.pt"
    fit(spurious, "erm", TrainConfig(epochs=2, batch_size=100), checkpoint=ckpt)
    with pytest.raises(ConfigError, match=r"written by a run with other settings \(lr: 0.01 then, 0.5 now\)"):
        fit(spurious, "erm", TrainConfig(epochs=2, batch_size=100, lr=0.5), checkpoint=ckpt)


@pytest.mark.parametrize("method", ["erm", "mat"])
def test_resume_of_the_gram_matrix_path_is_exact(tmp_path, method):
    data = make_setup21(n_train=200, n_val=100, n_test=100, noise_dim=400, seed=2)  # n < d: the Gram path
    cfg = TrainConfig(epochs=8, lr=1e-2, seed=1, history_splits=("test",))  # full-batch SGD, linear, no bias
    whole = fit(data, method, cfg)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupt):
        fit(data, _interrupting(method, 5), cfg, checkpoint=ckpt, checkpoint_every=1)
    assert torch.load(ckpt, weights_only=True)["dual"] is not None  # the Gram-matrix path was taken
    resumed = fit(data, method, cfg, checkpoint=ckpt, checkpoint_every=1)
    assert resumed.resumed_from == 4
    assert torch.equal(whole.model.heads.linear.weight, resumed.model.heads.linear.weight)
    assert whole.history == resumed.history and whole.selection_reports == resumed.selection_reports
