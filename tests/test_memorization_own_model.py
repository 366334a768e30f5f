"""The memorization audit of the user's own network: end to end (``model_factory``) or on its frozen features, in
Python and through ``memaware memorization --data PATH.csv --backbone module:Name``; records state the settings
the user gave, never memaware's defaults."""

import dataclasses
import json
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from memaware.cli import main
from memaware.data import make_setup21
from memaware.engine import TrainConfig, fit
from memaware.errors import ConfigError
from memaware.memorization import (
    ScoredModel,
    estimate,
    own_model_factory,
    seeded_factory,
    self_influence,
    train_full_models,
    trak_scores,
)
from memaware.memorization.subsample import _subset, balanced_design
from memaware.models.backbone_source import end_to_end_factory

CFG = TrainConfig(epochs=8, lr=0.05, optimizer="adam", batch_size=16, seed=3, selection="last")


class Small(nn.Module):
    """The user's network on features: (b, d) -> (b, 8)."""

    def __init__(self, d: int = 12):
        super().__init__()
        self.fc = nn.Linear(d, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


@pytest.fixture(scope="module")
def data():
    return make_setup21(n_train=40, n_val=8, n_test=8, noise_dim=10, seed=0)


def _run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_subsample_half_models_are_fit_with_the_users_network(data):
    factory = own_model_factory(data, lambda: Small(data.dim))
    res = estimate(data, "erm", "subsample", CFG, num_models=2, model_factory=factory)
    assert res.scores.shape == (40,) and np.isfinite(res.scores).all()
    p = res.params
    assert (p["epochs"], p["lr"], p["optimizer"], p["batch_size"], p["seed"]) == (8, 0.05, "adam", 16, 3)
    assert p["training"] == "end-to-end" and "lambda" in p["model"] and "hidden" not in p
    # half-model 1 is exactly fit on its half with seed + 1 (its own initial weights)
    masks = balanced_design(40, 2, torch.Generator().manual_seed(3))
    cfg4 = dataclasses.replace(CFG, seed=4)
    one = fit(_subset(data, masks[1]), "erm", cfg4, model_factory=seeded_factory(factory, 4))
    x = data.x[data.indices(0)]
    p1 = one.predict_logits(x).softmax(1).gather(1, data.y[data.indices(0)][:, None]).squeeze(1).double()
    held_in = masks[1].numpy()
    assert np.allclose(res.extra["p_held_in"][held_in], p1.numpy()[held_in], atol=1e-6)
    assert not torch.equal(factory(1, seed=3).backbone.fc.weight, factory(1, seed=4).backbone.fc.weight)


def test_mat_and_trak_on_the_users_network(data):
    factory = own_model_factory(data, lambda: Small(data.dim))
    mat = estimate(data, "mat", "subsample", CFG, num_models=2, model_factory=factory)
    assert np.isfinite(mat.scores).all() and mat.params["temperature"] == 0.1
    tr = estimate(data, "mat", "trak", CFG, num_models=2, model_factory=factory, proj_dim=6, trak_params="head")
    assert np.isfinite(tr.scores).all() and (tr.scores >= 0).all() and tr.params["params"] == "head"
    assert tr.params["optimizer"] == "adam" and tr.params["training"] == "end-to-end"
    models = train_full_models(data, "mat", CFG, 2, model_factory=factory)
    assert models[0].head == 0 and models[0].shift.shape == (40, 2)
    x, y = data.x[data.indices(0)], data.y[data.indices(0)]
    for params in ("all", "backbone.fc"):  # the user's network's own parameters: vmap over its gradients
        st = self_influence(models, x, y, 6, params=params)
        assert np.isfinite(st["score"]).all() and (st["score"] >= 0).all()
    with pytest.raises(ConfigError, match="subsample or trak"):
        estimate(data, "erm", "newton", CFG, model_factory=factory)


def test_a_plain_factory_is_seeded_through_the_global_rng(data):
    made = []

    def factory(num_heads):  # the user's own model_factory, no seed parameter: drawn from torch's global RNG
        made.append(end_to_end_factory(data, Small(data.dim))(num_heads))
        return made[-1]

    res = estimate(data, "erm", "trak", CFG, num_models=2, model_factory=factory, proj_dim=6)
    assert res.params["model"] == "test_a_plain_factory_is_seeded_through_the_global_rng.<locals>.factory"
    assert len(made) == 2  # one model each, trained from different weights
    assert not torch.equal(made[0].backbone.fc.weight, made[1].backbone.fc.weight)


def test_trak_on_callers_models_records_no_invented_settings(data):
    res = fit(data, "erm", CFG, model_factory=end_to_end_factory(data, Small(data.dim)))
    out = trak_scores(data, "erm", models=[ScoredModel(res.model.eval())], proj_dim=6,
                      trained_with={"epochs": 8, "optimizer": "adam"})  # fmt: skip
    assert out.params["training"] == "trained by the caller"
    assert out.params["epochs"] == 8 and out.params["optimizer"] == "adam" and "lr" not in out.params
    bare = trak_scores(data, "erm", models=[ScoredModel(res.model.eval())], proj_dim=6)
    assert not {"epochs", "lr", "optimizer", "hidden", "seed"} & set(bare.params)


def test_frozen_route_audits_heads_on_the_networks_features(data, tmp_path):
    from memaware.experiments.memorization import own_model_input

    inp = own_model_input(data, lambda: Small(data.dim), training="frozen", out=tmp_path)
    assert inp.model_factory is None and inp.data.dim == 8 and (tmp_path / "features.npz").is_file()
    assert inp.model["training"] == "frozen features" and inp.model["feature_dim"] == 8
    res = estimate(inp.data, "erm", "newton", TrainConfig(epochs=5, weight_decay=1e-3, selection="last"))
    assert np.isfinite(res.scores).all()


# ---- the command line on a user's image table and CNN ------------------------------------------------------------

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """72 16x16 PNGs: class = shape (square / bar), attribute = background (blue / green), a == y for 5 in 6
    training rows; a CSV filename,y,a,split with names for labels, attributes and splits; a CNN in mod_own.py."""
    from PIL import Image

    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    rows = ["filename,y,a,split"]
    splits = ["train"] * 48 + ["val"] * 12 + ["test"] * 12
    for i, split in enumerate(splits):
        y = i % 2
        a = y if (i // 2) % 6 else 1 - y
        img = np.zeros((16, 16, 3), dtype=np.uint8)
        img[:] = (40, 60, 200) if a == 0 else (40, 180, 60)
        if y == 0:
            img[5:11, 5:11] = 255
        else:
            img[7:9, 2:14] = 255
        img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"im{i}.png")
        rows.append(f"im{i}.png,{['square', 'bar'][y]},{['water', 'land'][a]},{split}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    (root / "mod_own.py").write_text(textwrap.dedent(NET))
    return root


ARGS = ["--num-models", "2", "--epochs", "2", "--lr", "0.01", "--optimizer", "adam", "--batch-size", "16"]


def test_cli_audits_the_users_cnn_end_to_end(table, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(table))
    out = tmp_path / "audit"
    code, stdout, err = _run(capsys, "memorization", "--data", table / "meta.csv", "--backbone", "mod_own:Net",
                             "--methods", "erm,mat", *ARGS, "--out", out)  # fmt: skip
    assert code == 0, err
    res = json.loads((out / "memorization.json").read_text())
    assert res["model"]["backbone"] == "mod_own:Net" and res["model"]["training"] == "end-to-end"
    assert res["model"]["feature_dim"] == 16 and res["data"]["n_train"] == 48
    for m in ("erm", "mat"):
        entry = res["methods"][m]
        assert len(entry["groups"]) == 4 and sum(g["n"] for g in entry["groups"].values()) == 48
        p = entry["params"]
        used = (p["epochs"], p["lr"], p["optimizer"], p["batch_size"], p["model"])
        assert used == (2, 0.01, "adam", 16, "mod_own:Net")
    assert res["audit"]["gap_change"] is not None
    assert "model:  mod_own:Net, end-to-end; epochs 2, lr 0.01, optimizer adam, batch_size 16" in stdout
    assert "minority mean" in stdout and "MAT changes the minority-majority gap" in stdout
    assert res["data"]["label_names"] == ["bar", "square"] and "note: labels 0=bar, 1=square" in stdout
    with np.load(out / "scores.npz") as z:
        assert z["score_erm"].shape == (48,) and np.isfinite(z["score_mat"]).all()


def test_cli_trak_and_frozen_on_the_users_cnn(table, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(table))
    base = ["memorization", "--data", table / "meta.csv", "--backbone", "mod_own:Net", "--methods", "erm"]
    code, _, err = _run(capsys, *base, "--estimator", "trak", "--proj-dim", "8", *ARGS, "--out", tmp_path / "t",
                        "--quiet")  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "t" / "memorization.json").read_text())
    assert res["methods"]["erm"]["params"]["proj_dim"] == 8 and res["methods"]["erm"]["params"]["epochs"] == 2
    code, _, err = _run(capsys, *base, "--frozen", "--hidden", "4", "--num-models", "2", "--epochs", "20",
                        "--out", tmp_path / "f", "--quiet")  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "f" / "memorization.json").read_text())
    assert res["model"]["training"] == "frozen features" and res["data"]["dim"] == 16
    assert res["model"]["backbone"] == "mod_own:Net (its own initialisation, seed 0)"
    assert (tmp_path / "f" / "features.npz").is_file() and res["methods"]["erm"]["params"]["hidden"] == [4]
    code, _, err = _run(capsys, *base, "--frozen", "--estimator", "newton", "--out", tmp_path / "n", "--quiet")
    assert code == 0, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hidden", "8", "--epochs", "2"], "put hidden layers in --backbone"),
        (["--estimator", "loo", "--epochs", "2"], "with --end-to-end use --estimator subsample or trak"),
        ([], "give --epochs"),
        (["--backbone", "mod_own:Nope", "--epochs", "2"], "Nope"),
        (["--backbone", "bert", "--epochs", "2"], "takes text input but the data is image"),
    ],
)
def test_cli_refuses_what_does_not_apply(table, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.syspath_prepend(str(table))
    argv = ["memorization", "--data", table / "meta.csv", "--out", tmp_path, *extra]
    if "--backbone" not in extra:
        argv += ["--backbone", "mod_own:Net"]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_refuses_table_flags_on_features(data, tmp_path, capsys):
    path = tmp_path / "f.npz"
    data.save_npz(path)
    code, _, err = _run(capsys, "memorization", "--data", path, "--end-to-end", "--out", tmp_path / "o")
    assert code == 2 and "is an .npz of features" in err


class _NoVmap(nn.Module):
    """The same network, with a data-dependent Python branch vmap cannot batch."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.abs().sum()) < 0:  # never true: only .item()-style access matters
            raise AssertionError
        return self.inner(x)


def test_a_network_vmap_cannot_batch_is_differentiated_example_by_example(data):
    from memaware.memorization.trak import margin_grads, select_params

    res = fit(data, "erm", CFG, model_factory=end_to_end_factory(data, Small(data.dim)))
    x, y = data.x[data.indices(0)], data.y[data.indices(0)]
    plain, wrapped = ScoredModel(res.model.eval()), ScoredModel(_NoVmap(res.model).eval())
    g = margin_grads(plain, x, y, select_params(plain.model), None)
    g_loop = margin_grads(wrapped, x, y, select_params(wrapped.model), None)
    assert torch.allclose(g, g_loop, atol=1e-6)
