import json
import math

import pytest

from memaware.errors import ConfigError
from memaware.methods import classifiers
from memaware.sweep.hparams import (
    FAMILIES,
    _stable_seed,
    family_for,
    needs_inferred_groups,
    parse_override,
    sample_hparams,
    uses_train_groups,
    val_group_use,
)

METHODS = classifiers()  # the registry's, in table order

LR = {
    ("features", "adam"): (1e-4, 1e-2),
    ("image", "sgd"): (1e-5, 1e-3),
    ("text", "adamw"): (1e-6, 1e-4),
}
BATCH = {"features": (128, 128), "image": (32, 128), "text": (16, 64)}


def test_reproducible_from_the_index_in_any_process():
    a = [sample_hparams(m, f, c) for m in METHODS for f in FAMILIES for c in range(6)]
    assert a == [sample_hparams(m, f, c) for m in METHODS for f in FAMILIES for c in range(6)]
    assert sample_hparams("mat", "image", 3, seed=0) == sample_hparams("mat", "image", 3, seed=7)  # seed-free
    assert _stable_seed("groupdro", "text", 4) == 0x2CFEDE1701782EF5  # SHA-256, not Python's salted hash()
    assert json.loads(json.dumps(a)) == a  # JSON-able as is


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_draws_in_range(method, family):
    draws = [sample_hparams(method, family, c) for c in range(1, 41)]
    for hp in draws:
        lo, hi = LR[(family, hp["optimizer"])]
        assert lo <= hp["lr"] <= hi
        assert 1e-6 <= hp["weight_decay"] <= 1e-3
        assert BATCH[family][0] <= hp["batch_size"] <= BATCH[family][1]
        assert hp["epochs"] == {"features": 30, "image": 10, "text": 5}[family]
        assert hp["hidden"] == [] and hp["class_balanced"] is False
        if method == "mat":
            assert hp["temperature"] in (0.001, 0.01, 0.1)
        if method == "groupdro":
            assert 1e-3 <= hp["eta"] <= 1e-1
        if method == "jtt":
            assert 1 <= hp["T"] < hp["epochs"] and hp["lambda_up"] in (5, 10, 20, 50, 100)
        if method == "lc":
            assert hp["q"] in (0.7, 0.8) and hp["tau"] in (0.1, 0.5, 1.0) and hp["ema"] in (0.0, 0.5, 0.9)
            assert hp["lambda_bias"] in (0.1, 0.5, 1.0, 2.0)
        if method == "ula":
            assert hp["probe_steps"] in (25, 50, 100, 200, 400) and hp["eta"] in (0.5, 1.0, 1.5)
        extra = {"mat": {"temperature"}, "groupdro": {"eta"}, "jtt": {"T", "lambda_up"},
                 "lc": {"q", "tau", "lambda_bias", "ema"}, "ula": {"probe_steps", "eta"},
                 "xrm-groupdro": {"eta"}}.get(method, set())  # fmt: skip
        base = {"lr", "weight_decay", "batch_size", "epochs", "optimizer", "momentum", "hidden", "bias"}
        base |= {"class_balanced", "init"}
        base |= {"schedule", "warmup_fraction", "clip_grad_norm", "head_dropout"} if family == "text" else set()
        assert set(hp) == base | extra
        assert hp["init"] == "zeros"  # the authors start every linear head at zero
        if family == "text":  # BERT's recipe: linear warm-up then linear decay, clipping, dropout before the heads
            assert hp["schedule"] == "linear" and hp["warmup_fraction"] == 0.1
            assert hp["clip_grad_norm"] == 1.0 and hp["head_dropout"] == 0.1
    assert len({hp["lr"] for hp in draws}) == len(draws)  # a real search, not one point
    if method == "mat":
        assert {hp["temperature"] for hp in draws} == {0.001, 0.01, 0.1}
    log_lr = [math.log10(hp["lr"]) for hp in draws if hp["optimizer"] == draws[0]["optimizer"]]
    assert max(log_lr) - min(log_lr) > 0.8  # spread over the range


def test_comb0_is_the_default():
    assert sample_hparams("erm", "features", 0) == {
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 128,
        "epochs": 30,
        "momentum": 0.0,
        "hidden": [],
        "bias": True,
        "class_balanced": False,
        "init": "zeros",
    }
    assert sample_hparams("mat", "features", 0)["temperature"] == 0.1
    assert sample_hparams("groupdro", "image", 0)["eta"] == 0.01
    jtt = sample_hparams("jtt", "image", 0)
    assert (jtt["T"], jtt["lambda_up"], jtt["epochs"]) == (2, 20, 10)
    img = sample_hparams("erm", "image", 0)
    assert (img["optimizer"], img["lr"], img["batch_size"], img["momentum"]) == ("sgd", 1e-3, 64, 0.9)
    txt = sample_hparams("erm", "text", 0)
    assert (txt["optimizer"], txt["lr"], txt["batch_size"]) == ("adamw", 2e-5, 32)


def test_datasets_fixed_values_and_group_usage():
    assert sample_hparams("erm", "image", 2, dataset="celeba")["epochs"] == 5
    assert sample_hparams("erm", "text", 0, dataset="civilcomments")["class_balanced"] is True
    assert family_for(None) == "features" and family_for("Waterbirds") == "image" and family_for("multinli") == "text"
    with pytest.raises(ConfigError, match="--family"):
        family_for("imagenet")
    fixed = dict(parse_override(t) for t in ("epochs=20", "hidden=64,64", "temperature=0.01", "lr=1e-3"))
    assert fixed == {"epochs": 20, "hidden": [64, 64], "temperature": 0.01, "lr": 1e-3}
    mat = sample_hparams("mat", "features", 5, fixed=fixed)
    assert (mat["epochs"], mat["hidden"], mat["temperature"], mat["lr"]) == (20, [64, 64], 0.01, 1e-3)
    assert "temperature" not in sample_hparams("erm", "features", 5, fixed=fixed)
    assert sample_hparams("mat", "image", 1, fixed={"mode": "single-run"})["mode"] == "single-run"
    assert "mode" not in sample_hparams("jtt", "image", 1, fixed={"mode": "single-run"})
    assert sample_hparams("jtt", "features", 0, fixed={"epochs": 20})["T"] == 4  # T from the final epochs
    for bad in ("epochs", "nope=1", "epochs=1.5", "class_balanced=1", "hidden=a,b"):
        with pytest.raises(ConfigError):
            parse_override(bad)
    with pytest.raises(ConfigError, match="unknown method"):
        sample_hparams("lff", "features", 0)
    assert [m for m in METHODS if uses_train_groups(m)] == ["groupdro", "subg", "rwg"]
    assert [m for m in METHODS if not needs_inferred_groups(m)] == ["xrm", "mat", "ula", "xrm-groupdro"]
    assert (val_group_use("val_wga"), val_group_use("val_gi_wga"), val_group_use("val_avg")) == (
        "yes",
        "inferred",
        "no",
    )
