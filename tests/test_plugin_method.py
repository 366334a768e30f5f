"""A method defined outside memaware runs through fit, `memaware train`, `memaware sweep` and `memaware table`
with no edit of memaware: it is named as package.module:Class and declares its own hyper-parameters."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from memaware import TrainConfig, fit, load_npz, make_setup21
from memaware.cli import main
from memaware.errors import ConfigError
from memaware.methods import METHODS, make_method, method_class
from memaware.sweep.hparams import sample_hparams

PLUGIN = textwrap.dedent(
    '''
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_y) ** gamma, a user's own method."""
    import torch
    import torch.nn.functional as F

    from memaware.methods import Batch, HParam, LogUniform, Method


    class Focal(Method):
        name = "focal"
        summary = "focal loss, (1 - p_y)^gamma cross-entropy"
        hparams = {"gamma": HParam(2.0, "focusing exponent", search={"*": LogUniform(-1, 0.5)}, low=0.0,
                                   low_inclusive=True)}

        def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            logp = F.log_softmax(logits[:, 0], dim=1).gather(1, batch.y[:, None]).squeeze(1)
            return (-(1 - logp.exp()) ** self.gamma * logp).mean()
    '''
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userpkg.losses:Focal"


@pytest.fixture
def npz(tmp_path):
    data = make_setup21(n_train=300, n_val=150, n_test=150, noise_dim=20, seed=0)
    path = tmp_path / "s21.npz"
    np.savez(path, x=data.x.numpy(), y=data.y.numpy(), a=data.a.numpy(), split=data.split.numpy())
    return path, data


def test_fit_with_an_outside_method(plugin, npz):
    _, data = npz
    cls = method_class(plugin)
    assert cls.name == "focal" and "focal" not in METHODS  # resolved, not registered
    method = make_method(plugin, gamma=1.0)
    res = fit(data, method, TrainConfig(epochs=30, lr=0.1, seed=0))
    assert res.method is not method and method.gamma == 1.0  # fit trained a copy
    assert res.evaluate(data, "train")["avg_acc"] > 0.8
    with pytest.raises(ConfigError, match="focal gamma must be >= 0"):
        make_method(plugin, gamma=-1.0)
    hp = [sample_hparams(plugin, "features", c)["gamma"] for c in range(3)]
    assert hp[0] == 2.0 and all(10**-1 <= g <= 10**0.5 for g in hp[1:]) and hp[1] != hp[2]


def test_train_sweep_and_table_with_an_outside_method(plugin, npz, tmp_path, capsys):
    path, _ = npz
    out = tmp_path / "run"
    argv = ["train", "--data", str(path), "--method", plugin, "--method-param", "gamma=0.5", "--epochs", "20"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == plugin and res["hparams"]["gamma"] == 0.5
    # the command trains what the library trains: the same run through fit gives the same test report
    lib = fit(load_npz(path), make_method(plugin, gamma=0.5), TrainConfig(epochs=20))
    assert res["selected_epoch"] == lib.selected_epoch
    assert res["test"] == lib.evaluate(load_npz(path), "test")
    assert main(["train", "--data", str(path), "--method", plugin, "--method-param", "beta=1", "--out",
                 str(tmp_path / "bad"), "--quiet"]) == 2  # fmt: skip
    assert "no such hyper-parameter" in capsys.readouterr().err
    sweep = tmp_path / "sw"
    argv = ["sweep", "--data", str(path), "--methods", f"erm,{plugin}", "--n-hparams", "2", "--seeds", "2"]
    assert main([*argv, "--set", "epochs=3", "--jobs", "1", "--out", str(sweep), "--quiet"]) == 0
    runs = sorted(p.parent.name for p in sweep.rglob("results.json") if "--" in str(p))
    assert runs == ["comb0_seed0", "comb0_seed1", "comb1_seed0", "comb1_seed1"]
    capsys.readouterr()
    assert main(["table", "--sweep", str(sweep), "--selection", "va_wga", "--no-plot"]) == 0
    table = capsys.readouterr().out
    assert "| ERM |" in table and "| FOCAL |" in table
