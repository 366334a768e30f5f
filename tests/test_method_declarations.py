"""Each method declares itself once, and carries no state from one run into the next: fit trains a fresh copy,
phases run as an explicit pipeline, and loss() changes nothing (after_step does)."""

from __future__ import annotations

import copy

import pytest
import torch

from memaware import TrainConfig, fit, make_setup21
from memaware.errors import ConfigError
from memaware.methods import METHODS, Batch, TrainContext, classifiers, make_method
from memaware.sweep.hparams import sample_hparams

CFG = TrainConfig(epochs=4, lr=1e-2, optimizer="adam", batch_size=64, seed=1)


@pytest.fixture(scope="module")
def data():
    return make_setup21(n_train=200, n_val=100, n_test=100, noise_dim=30, sigma=0.5, seed=0)


def test_every_method_declares_itself():
    assert classifiers() == ["erm", "groupdro", "subg", "rwg", "jtt", "xrm", "mat", "lc", "ula", "xrm-groupdro", "dfr"]
    for name, cls in METHODS.items():
        assert cls.name == name and cls.summary, name
        method = cls()  # every hyper-parameter has a default that passes its own check
        for key, spec in cls.hparams.items():
            assert getattr(method, key) == spec.default and spec.help
            assert spec.check(name, key, spec.default) == spec.default
    assert [m for m in classifiers() if METHODS[m].needs_train_groups] == ["groupdro", "subg", "rwg"]
    assert [m for m in classifiers() if METHODS[m].infers_groups] == ["xrm", "mat", "ula", "xrm-groupdro"]
    assert [m for m in classifiers() if METHODS[m].needs_val_groups] == ["dfr"]
    assert [METHODS[m].label() for m in ("lc", "ula", "xrm-groupdro", "dfr")] == ["LC", "uLA", "XRM+GroupDRO", "DFR"]


def test_declarations_drive_the_sweep_and_the_command(capsys):
    from memaware.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in classifiers():
        for key, spec in METHODS[name].hparams.items():
            assert spec.cli_flag(key) in text, (name, key)
            if spec.distribution("features") is not None:
                assert key in sample_hparams(name, "features", 3)
    assert sample_hparams("mat", "features", 0)["temperature"] == METHODS["mat"].hparams["temperature"].default


def test_bad_hyper_parameters_are_one_line_errors():
    with pytest.raises(ConfigError, match="MAT temperature must be > 0|mat temperature must be > 0"):
        make_method("mat", temperature=0.0)
    with pytest.raises(ConfigError, match="has no hyper-parameter"):
        make_method("erm", eta=0.1)
    with pytest.raises(ConfigError, match="must be one of"):
        make_method("mat", mode="three-phase")


@pytest.mark.parametrize("name", ["erm", "groupdro", "jtt", "xrm", "mat"])
def test_a_reused_instance_gives_the_same_run_twice(data, name):
    method = make_method(name, **({"T": 2} if name == "jtt" else {}))
    before = copy.deepcopy(vars(method))
    first, second = fit(data, method, CFG), fit(data, method, CFG)
    assert first.method is not method and second.method is not first.method
    assert set(vars(method)) == set(before)  # nothing (a phase-1 result, an error set, q) was left on it
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert first.selection_reports == second.selection_reports
    if name in ("mat", "jtt"):
        assert list(first.phases) == (["xrm"] if name == "mat" else ["jtt-id"])


@pytest.mark.parametrize("name,kwargs", [("groupdro", {}), ("xrm", {}), ("mat", {"mode": "single-run"})])
def test_loss_changes_no_state(data, name, kwargs):
    method = make_method(name, **kwargs)
    train_idx = data.indices(0)
    ctx = TrainContext(data, train_idx, CFG, torch.Generator().manual_seed(0))
    method.prepare(ctx, {})
    logits = torch.randn(len(train_idx), method.num_heads, data.num_classes)
    batch = Batch(torch.arange(len(train_idx)), data.y[train_idx])
    state = copy.deepcopy(method.state_dict())
    first = method.loss(logits, batch)
    assert torch.equal(first, method.loss(logits, batch))
    for key, value in method.state_dict().items():
        assert torch.equal(value, state[key]), key
    method.after_step(logits, batch, None)  # the hook is where state moves
    assert any(not torch.equal(v, state[k]) for k, v in method.state_dict().items())
