"""FashionBirds' default recipe (the paper's regime): RGB renders, cached EfficientNet-Lite0 features, both label pairs,
the balanced-data variant, and the renders as an image dataset for end-to-end training.

Needs Debian's dataset-fashion-mnist and scikit-image (both installed by `make install`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_benchmarks import needs_fashion

from memaware.cli import main
from memaware.data import TEST, TRAIN, VAL, load_npz
from memaware.data.benchmarks import build_benchmark
from memaware.data.benchmarks import fashionbirds_features as fbf
from memaware.data.benchmarks import fashionbirds_render as fbr
from memaware.data.benchmarks.common import group_counts
from memaware.data.benchmarks.fashionbirds import load_fashion_mnist
from memaware.data.datasets import open_dataset
from memaware.errors import ConfigError
from memaware.models.efficientnet import installed_weights_path, make_efficientnet_lite0

pytestmark = needs_fashion
SMALL = {"scale": 0.01}  # 35 + 2 + 1 + 11 training rows, 3 per group in val and test


@pytest.fixture(scope="module")
def labels():
    fm = load_fashion_mnist()
    return {"train": fm["train_labels"], "test": fm["test_labels"]}


def test_plan_sizes_pairs_and_halves(labels):
    fm = load_fashion_mnist()
    for pair in ("hard", "easy"):
        plan = fbr.plan_rows(labels, seed=0, pair=pair)
        g = 2 * plan.y + plan.a
        for split, sizes in ((TRAIN, [3498, 184, 56, 1057]), (VAL, [300] * 4), (TEST, [300] * 4)):
            assert np.bincount(g[plan.split == split], minlength=4).tolist() == sizes
        assert len(plan) == 7195
        # every garment's Fashion-MNIST class belongs to its label's pair, test garments from the test file
        test_ids = np.minimum(plan.garment, 9999)
        cls = np.where(plan.file == 0, fm["train_labels"][plan.garment], fm["test_labels"][test_ids])
        for y in (0, 1):
            assert set(np.unique(cls[plan.y == y])) == set(fbr.PAIRS[pair][y])
        assert (plan.file == (plan.split == TEST)).all()
        # no garment is used twice within a file
        for f in (0, 1):
            ids = plan.garment[plan.file == f]
            assert len(np.unique(ids)) == len(ids)
        # training crops from the left half of the photo, evaluation crops from the right half
        assert plan.crop_col[plan.split == TRAIN].max() + fbr.CANVAS <= 256
        assert plan.crop_col[plan.split != TRAIN].min() >= 256
        assert plan.crop_row.max() + fbr.CANVAS <= 512


def test_plan_is_seeded_and_validation_does_not_depend_on_training_sizes(labels):
    a = fbr.plan_rows(labels, seed=0)
    assert np.array_equal(a.garment, fbr.plan_rows(labels, seed=0).garment)
    assert not np.array_equal(a.garment, fbr.plan_rows(labels, seed=1).garment)
    bal = fbr.plan_rows(labels, seed=0, train_groups="balanced")
    assert np.bincount((2 * bal.y + bal.a)[bal.split == TRAIN]).tolist() == [1199, 1199, 1199, 1198]
    for split in (VAL, TEST):
        rows_a, rows_b = np.flatnonzero(a.split == split), np.flatnonzero(bal.split == split)
        assert a.key(rows_a) == bal.key(rows_b)  # same renders: the balanced variant reuses their cached features
    assert a.key(np.flatnonzero(a.split == TRAIN)) != bal.key(np.flatnonzero(bal.split == TRAIN))
    with pytest.raises(ConfigError, match="option pair must be one of hard, easy, got 'medium'"):
        fbr.plan_rows(labels, seed=0, pair="medium")
    with pytest.raises(ConfigError, match="garments of label 0"):
        fbr.plan_rows(labels, seed=0, test_per_group=1500)


def test_renders_show_tinted_background_and_the_enlarged_garment():
    ds = fbr.open_fashionbirds_images(scale=0.01)
    rows = np.arange(len(ds))
    scenes = ds.scenes(rows)
    assert scenes.shape == (len(ds), 3, 160, 160) and scenes.min() >= 0 and scenes.max() <= 1
    corner = scenes[:, :, :8, :8].mean(dim=(2, 3))  # background only (the garment spans the middle 136 px)
    grass, brick = corner[torch.from_numpy(ds.plan.a) == 0], corner[torch.from_numpy(ds.plan.a) == 1]
    assert (grass[:, 1] > grass[:, 0]).all() and (brick[:, 0] > brick[:, 1]).all()  # green vs red
    # the garment's centre pixel, enlarged 136/28 times, shows the garment's own grey where the garment is solid
    centre = scenes[:, :, 80, 80]
    solid = ds.masks[:, 13:15, 13:15].all(axis=(1, 2))
    grey = ds.garments[:, 13:15, 13:15].mean(axis=(1, 2)) / 255.0
    assert np.allclose(centre[solid].numpy(), grey[solid, None], atol=0.12)
    # as an image dataset: ImageNet-normalised at any side
    small = ds.load([0, 1])
    assert small.shape == (2, 3, 160, 160)
    ds32 = fbr.open_fashionbirds_images(image_size=32, scale=0.01)
    assert ds32.load([0, 1]).shape == (2, 3, 32, 32)


def test_features_equal_the_network_and_are_cached(tmp_path, monkeypatch):
    d = build_benchmark("fashionbirds", cache_dir=tmp_path, **SMALL)
    assert d.dim == 1280 and group_counts(d) == {"train": [35, 2, 1, 11], "val": [3] * 4, "test": [3] * 4}
    files = sorted(p.name for p in (tmp_path / "fashionbirds").iterdir())
    assert len(files) == 3 and files[0].startswith("test-") and files[1].startswith("train-")
    # the features are the pretrained network's on the renders
    net, _ = make_efficientnet_lite0()
    ds = fbr.open_fashionbirds_images(scale=0.01)
    with torch.no_grad():
        direct = net.eval()(ds.load(np.arange(4)))
    assert torch.allclose(d.x[:4], direct, atol=1e-4)

    # preparing twice costs nothing: the network is not even built
    def refuse(*args, **kwargs):
        raise AssertionError("the network ran although every split was cached")

    monkeypatch.setattr("memaware.models.efficientnet.make_efficientnet_lite0", refuse)
    again = build_benchmark("fashionbirds", cache_dir=tmp_path, **SMALL)
    assert torch.equal(again.x, d.x)
    # anything that changes the renders misses the cache: another pair recomputes (and the network is needed)
    with pytest.raises(AssertionError, match="the network ran"):
        build_benchmark("fashionbirds", cache_dir=tmp_path, pair="easy", **SMALL)
    monkeypatch.undo()
    # a damaged cache file is recomputed, not trusted
    train_file = next((tmp_path / "fashionbirds").glob("train-*.npy"))
    train_file.write_bytes(b"garbage")
    assert torch.allclose(build_benchmark("fashionbirds", cache_dir=tmp_path, **SMALL).x, d.x, atol=1e-5)


def test_weights_change_the_cache_key(tmp_path):
    ds = fbr.open_fashionbirds_images(scale=0.01)
    a = fbf.cache_paths(ds, "0" * 64, tmp_path)
    b = fbf.cache_paths(ds, "1" * 64, tmp_path)
    assert all(a[s] != b[s] for s in a)


def test_prepare_cli_progress_pairs_and_errors(tmp_path, capsys):
    out = tmp_path / "fb.npz"
    base = ["prepare", "fashionbirds", "--cache-dir", str(tmp_path / "cache"), "--option", "scale=0.01"]
    assert main([*base, "--option", "pair=easy", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "fashionbirds (scale=0.01, pair=easy), 73 examples x 1280 features" in captured.out
    assert "fashionbirds features" not in captured.err  # off a terminal: no progress bar
    assert load_npz(out).dim == 1280
    # the bar shows when asked for (a terminal, or the option)
    assert main([*base, "--option", "pair=hard", "--option", "progress=true", "--out", str(out), "--quiet"]) == 0
    assert "fashionbirds features" in capsys.readouterr().err
    # bad values and bad weights: one line, exit 2, nothing written
    bad = tmp_path / "bad.npz"
    for opt, message in (
        ("pair=medium", "option pair must be one of hard, easy"),
        ("recipe=raw", "option recipe must be one of pretrained, pixels"),
        ("train_groups=even", "option train_groups must be one of waterbirds, balanced"),
        (f"weights={tmp_path / 'nope.pth'}", "no such file"),
    ):
        assert main([*base, "--option", opt, "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(installed_weights_path().read_bytes()[:5000])
    assert main([*base, "--option", f"weights={corrupt}", "--option", "pair=easy", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a loadable efficientnet-lite0 state dict" in err
    assert not bad.exists()


def test_features_command_on_the_fashionbirds_dataset(tmp_path, capsys):
    ds = open_dataset("fashionbirds", "/usr/share/datasets/fashion-mnist", image_size=160)
    assert ds.modality == "image" and len(ds) == 7195
    assert open_dataset("fashionbirds-easy", "/usr/share/datasets/fashion-mnist").name == "fashionbirds-easy"


def test_end_to_end_mat_fine_tunes_the_pretrained_backbone():
    """CPU-sized end-to-end MAT: its XRM phase, then the memorization-aware phase, fine-tune the pretrained
    EfficientNet-Lite0 and the heads on 32 px FashionBirds renders (2 % of the rows, a few SGD steps per phase)."""
    from memaware.engine import TrainConfig, fit
    from memaware.models.backbones import EndToEndNet

    torch.manual_seed(0)
    ds = fbr.open_fashionbirds_images(image_size=32, scale=0.02)
    pretrained, _ = make_efficientnet_lite0()
    start = {k: v.clone() for k, v in pretrained.state_dict().items()}

    def factory(num_heads: int) -> torch.nn.Module:
        backbone, dim = make_efficientnet_lite0()
        return EndToEndNet(ds, backbone, dim, 2, num_heads, bias=True, seed=0)

    cfg = TrainConfig(epochs=2, max_steps=6, lr=1e-2, optimizer="sgd", momentum=0.9, batch_size=16, eval_batch_size=64)
    result = fit(ds.data, "mat", cfg, model_factory=factory)
    assert "xrm" in result.phases and result.phases["xrm"].model.heads.linear.weight.shape[0] == 2 * 2
    after = result.model.backbone.state_dict()
    moved = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, start[k])]
    conv = [k for k in start if k.endswith("weight") and "_conv" in k]
    assert set(conv) <= set(moved)  # every convolution of the backbone was updated
    report = result.evaluate(ds.data, "test")
    assert 0.0 <= report["worst_group_acc"] <= report["avg_acc"] <= 1.0


@pytest.mark.slow
def test_end_to_end_mat_cli_on_the_full_fashionbirds(tmp_path, capsys):
    """The same through `memaware train --dataset fashionbirds` on all 7,195 rows (about a minute on one core)."""
    out = tmp_path / "run"
    args = [
        "train", "--dataset", "fashionbirds", "--data-dir", "/usr/share/datasets/fashion-mnist",
        "--backbone", "efficientnet-lite0", "--image-size", "32", "--method", "mat", "--max-steps", "4",
        "--batch-size", "16", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "1e-3", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["n"] == 7195 and res["data"]["split_sizes"] == [4795, 1200, 1200]
    assert res["data"]["notes"] == ["rendered at 160 px, fed to the backbone at 32 px, pair hard"]
    assert 0.0 <= float(res["test"]["worst_group_acc"]) <= 1.0
    # the saved model's backbone is the pretrained network, fine-tuned
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    pretrained, _ = make_efficientnet_lite0()
    key = "net._conv_stem.weight"
    saved = next(v for k, v in state.items() if k.endswith("backbone." + key))
    start = pretrained.state_dict()[key]
    assert saved.shape == start.shape and not torch.equal(saved, start)
    assert torch.allclose(saved, start, atol=0.05)  # a few small steps away from the ImageNet weights
