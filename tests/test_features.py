"""`memaware features` end to end on every layout, the backbones, and EndToEndNet."""

import sys

import numpy as np
import pytest
import torch
from layout_fixtures import make_celeba, make_civilcomments, make_multinli, make_waterbirds

from memaware.cli import main
from memaware.data import load_npz
from memaware.data.datasets import open_dataset
from memaware.errors import ConfigError
from memaware.experiments.features import embed
from memaware.models.backbones import BACKBONES, EndToEndNet, make_backbone, resnet50_weights_path

CASES = {
    "waterbirds": (make_waterbirds, "tiny-cnn"),
    "celeba": (make_celeba, "tiny-cnn"),
    "multinli": (make_multinli, "tiny-text"),
    "civilcomments": (make_civilcomments, "tiny-text"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_features_command_end_to_end(tmp_path, capsys, name):
    make, backbone = CASES[name]
    fx = make(tmp_path / "data")
    out = tmp_path / "feats" / f"{name}.npz"
    base = [
        "features",
        "--dataset",
        name,
        "--data-dir",
        str(tmp_path / "data"),
        "--backbone",
        backbone,
        "--image-size",
        "16",
    ]
    assert main([*base, "--out", str(out), "--batch-size", "7"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the summary is one wrapped paragraph
    rows = np.asarray([r[2:] for r in fx["rows"]], dtype=np.int64)  # split, y, a
    assert f"Embedded {len(rows)} rows of {name}" in text and "Next: memaware train --data" in text
    data = load_npz(out)
    assert data.x.shape == (len(rows), 32) and torch.isfinite(data.x).all()
    assert data.y.tolist() == rows[:, 1].tolist() and data.a.tolist() == rows[:, 2].tolist()
    assert data.split.tolist() == rows[:, 0].tolist() and data.num_attrs == fx["num_attrs"]
    assert data.x.std(dim=0).max() > 0  # rows differ
    if name == "civilcomments":
        assert "duplicated" in text
    # the same seed gives the same features; --quiet prints nothing
    again = tmp_path / "again.npz"
    assert main([*base, "--out", str(again), "--batch-size", "100", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert torch.allclose(load_npz(again).x, data.x, atol=1e-5)


def test_features_refuses_mismatched_backbone_and_tiny_weights(tmp_path, capsys):
    make_waterbirds(tmp_path)
    out = tmp_path / "f.npz"
    base = ["features", "--dataset", "waterbirds", "--data-dir", str(tmp_path), "--out", str(out)]
    assert main([*base, "--backbone", "tiny-text"]) == 2
    assert (
        "takes text input but dataset 'waterbirds' is image; choose from resnet50, tiny-cnn" in capsys.readouterr().err
    )
    (tmp_path / "w.pth").touch()  # exists: the flag combination, not the file, is at fault
    assert main([*base, "--backbone", "tiny-cnn", "--weights", str(tmp_path / "w.pth")]) == 2
    assert "takes no --weights" in capsys.readouterr().err
    assert main([*base, "--backbone", "tiny-cnn", "--batch-size", "0"]) == 2
    assert not out.exists()


@pytest.mark.parametrize(
    ("backbone", "module", "extra"), [("resnet50", "torchvision", "vision"), ("bert", "transformers", "text")]
)
def test_missing_optional_package_is_a_one_line_config_error(monkeypatch, backbone, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ConfigError, match=rf"needs the {module} package: pip install 'memaware\[{extra}\]'"):
        make_backbone(backbone)


def test_resnet50_weights_are_never_downloaded(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        resnet50_weights_path()
    with pytest.raises(ConfigError, match="no such file"):
        resnet50_weights_path(tmp_path / "missing.pth")
    (hub / "checkpoints").mkdir(parents=True)
    for f in ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"):
        (hub / "checkpoints" / f).write_bytes(b"")
    assert resnet50_weights_path().name == "resnet50-0676ba61.pth"  # torchvision's V1, the authors' weights


# the real ResNet-50 and BERT backbones: tests/test_backbones_real.py (run by `make test` in .venv-vision)


def test_tiny_backbones_take_both_text_forms_and_are_seeded():
    text, dim = make_backbone("tiny-text", seed=1)
    assert text(["a b", "", "c"]).shape == (3, dim)
    tokens = {
        "input_ids": torch.tensor([[101, 7, 0], [101, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]]),
    }
    assert text(tokens).shape == (2, dim)
    again, _ = make_backbone("tiny-text", seed=1)
    assert torch.equal(text(["x y"]), again(["x y"]))
    cnn, _ = make_backbone("tiny-cnn", seed=1)
    cnn2, _ = make_backbone("tiny-cnn", seed=2)
    img = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(cnn(img), cnn2(img))
    assert set(BACKBONES) == {"resnet50", "efficientnet-lite0", "bert", "tiny-cnn", "tiny-text"}


@pytest.mark.parametrize("name", ["waterbirds", "multinli", "civilcomments"])
def test_end_to_end_net_shapes_and_gradients(tmp_path, name):
    make, backbone_name = CASES[name]
    make(tmp_path)
    ds = open_dataset(name, tmp_path, image_size=16)
    backbone, dim = make_backbone(backbone_name, seed=0)
    net = EndToEndNet(ds, backbone, dim, ds.data.num_classes, num_heads=3, seed=5)
    x = ds.data.x[[4, 1, 2, 0]]
    logits = net(x)
    assert logits.shape == (4, 3, ds.data.num_classes)
    assert torch.allclose(net.features(x), backbone(ds.load([4, 1, 2, 0])))
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone_parameters())
    assert len(net.head_parameters()) == 1 and net.head_parameters()[0].shape == (3 * ds.data.num_classes, dim)
    twin = EndToEndNet(ds, make_backbone(backbone_name, seed=0)[0], dim, ds.data.num_classes, num_heads=3, seed=5)
    assert torch.equal(twin.heads.linear.weight, net.heads.linear.weight)  # heads drawn from the seed alone
    assert set(net.state_dict()) == {k for k in net.state_dict() if k.startswith(("backbone.", "heads."))}


def test_fit_trains_an_end_to_end_net(tmp_path):
    from memaware.engine import TrainConfig, fit

    make_waterbirds(tmp_path)
    ds = open_dataset("waterbirds", tmp_path, image_size=16)
    backbone, dim = make_backbone("tiny-cnn", seed=0)
    model = EndToEndNet(ds, backbone, dim, ds.data.num_classes, num_heads=1, seed=0)
    before = [p.detach().clone() for p in model.backbone_parameters()]
    res = fit(ds.data, "erm", TrainConfig(epochs=2, lr=0.1, batch_size=8), model=model)
    assert res.model is model and 0.0 <= res.evaluate(ds.data, "test")["avg_acc"] <= 1.0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.backbone_parameters(), strict=True))


def test_embed_matches_the_backbone_row_by_row(tmp_path):
    make_celeba(tmp_path)
    ds = open_dataset("celeba", tmp_path, image_size=16)
    net, dim = make_backbone("tiny-cnn", seed=3)
    feats = embed(ds, net, dim, batch_size=5)
    with torch.no_grad():
        assert np.allclose(feats[[0, 23]], net.eval()(ds.load([0, 23])).numpy(), atol=1e-5)
