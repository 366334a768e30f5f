import numpy as np
import pytest
import torch

from memaware.data import TEST, TRAIN, VAL, GroupData, load_npz, make_setup21
from memaware.errors import ConfigError, DataError


def test_setup21_statistics():
    d = make_setup21(
        n_train=1000,
        n_val=500,
        n_test=600,
        noise_dim=300,
        gamma=5.0,
        sigma=0.5,
        rho_train=0.9,
        rho_eval=0.5,
        seed=3,
    )
    assert d.x.shape == (2100, 302) and d.num_classes == 2 and d.num_attrs == 2
    for split, n, rho in ((TRAIN, 1000, 0.9), (VAL, 500, 0.5), (TEST, 600, 0.5)):
        idx = d.indices(split)
        assert len(idx) == n
        agree = (d.a[idx] == d.y[idx]).float().mean().item()
        assert agree == pytest.approx(rho, abs=1e-6)  # exact proportions
        assert (d.y[idx] == 1).float().mean().item() == pytest.approx(0.5, abs=1e-9)
    # core feature: sign of y with 12% jitter; spurious: gamma times the sign of a
    s_y, s_a = 2.0 * d.y - 1, 2.0 * d.a - 1
    assert torch.all(torch.sign(d.x[:, 0]) == s_y)
    assert (d.x[:, 0] * s_y).mean().item() == pytest.approx(1.0, abs=0.02)
    assert (d.x[:, 0] * s_y).std().item() == pytest.approx(0.12, abs=0.01)
    assert (d.x[:, 1] * s_a).mean().item() == pytest.approx(5.0, abs=0.1)
    assert d.x[:, 2:].std().item() == pytest.approx(0.5, rel=0.01)
    assert d.x[:, 2:].mean().item() == pytest.approx(0.0, abs=0.01)


def test_same_seed_same_draw_across_sigma():
    a = make_setup21(n_train=50, n_val=20, n_test=20, noise_dim=10, sigma=0.0, seed=1)
    b = make_setup21(n_train=50, n_val=20, n_test=20, noise_dim=10, sigma=0.5, seed=1)
    c = make_setup21(n_train=50, n_val=20, n_test=20, noise_dim=10, sigma=0.5, seed=1)
    assert torch.equal(a.y, b.y) and torch.equal(a.a, b.a) and torch.equal(a.x[:, :2], b.x[:, :2])
    assert torch.all(a.x[:, 2:] == 0)
    assert torch.equal(b.x, c.x)
    assert not torch.equal(b.x, make_setup21(n_train=50, n_val=20, n_test=20, noise_dim=10, seed=2).x)


def test_multiclass_generator():
    d = make_setup21(n_train=300, n_val=90, n_test=90, noise_dim=20, num_classes=3, seed=0)
    assert d.x.shape[1] == 3 + 3 + 20 and d.num_classes == 3 and d.num_attrs == 3
    tr = d.indices(TRAIN)
    assert torch.bincount(d.y[tr]).tolist() == [100, 100, 100]
    assert (d.a[tr] == d.y[tr]).float().mean().item() == pytest.approx(0.9)
    assert set(torch.unique(d.a[tr][d.a[tr] != d.y[tr]] - d.y[tr][d.a[tr] != d.y[tr]]).abs().tolist()) <= {
        1,
        2,
    }
    assert d.num_groups == 9 and d.group.max().item() == 8


@pytest.mark.parametrize("kwargs", [{"sigma": -1}, {"rho_train": 1.5}, {"n_train": 0}, {"num_classes": 1}])
def test_generator_rejects_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        make_setup21(**kwargs)


def test_npz_round_trip(tmp_path):
    d = make_setup21(n_train=30, n_val=10, n_test=10, noise_dim=5, seed=0)
    path = d.save_npz(tmp_path / "d.npz")
    e = load_npz(path)
    assert torch.equal(d.x, e.x) and torch.equal(d.y, e.y) and torch.equal(d.a, e.a)
    assert torch.equal(d.split, e.split) and e.num_attrs == 2 and e.num_classes == 2
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_group_ids_use_attribute_count_over_all_splits():
    # attribute value 2 appears only in test: group ids must still use A = 3 everywhere
    x = np.zeros((6, 2), dtype=np.float32)
    d = GroupData.from_arrays(x, [0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2], a=[0, 1, 0, 1, 2, -1])
    assert d.num_attrs == 3
    assert d.group.tolist() == [0, 4, 0, 4, 2, -1]


def test_missing_attribute_means_unknown(tmp_path):
    path = tmp_path / "noa.npz"
    np.savez(path, x=np.zeros((3, 2)), y=[0, 1, 0], split=[0, 1, 2])
    d = load_npz(path)
    assert d.a.tolist() == [-1, -1, -1] and not d.has_attrs(1)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"y": [0, 1, 0], "split": [0, 1, 2]}, "missing required field 'x'"),
        (
            {"x": np.zeros((3, 2)), "y": [0, 1], "split": [0, 1, 2]},
            "field 'y' has 2 entries but 'x' has 3 rows",
        ),
        (
            {"x": [[0.0], [np.nan], [1.0]], "y": [0, 1, 0], "split": [0, 1, 2]},
            "non-finite value nan at row 1",
        ),
        (
            {"x": [[0.0], [np.inf], [1.0]], "y": [0, 1, 0], "split": [0, 1, 2]},
            "non-finite value inf at row 1",
        ),
        (
            {"x": np.zeros((3, 1)), "y": [0, 0.5, 1], "split": [0, 1, 2]},
            "field 'y' must hold integers, found 0.5",
        ),
        (
            {"x": np.zeros((3, 1)), "y": [0, -1, 1], "split": [0, 1, 2]},
            "field 'y' must be in 0..K-1, found -1",
        ),
        (
            {"x": np.zeros((3, 1)), "y": [0, 1, 1], "split": [0, 1, 2], "a": [0, -3, 1]},
            "field 'a' must be in 0..A-1",
        ),
        ({"x": np.zeros((3, 1)), "y": [0, 1, 1], "split": [0, 1, 5]}, "field 'split' must be 0 (train)"),
        ({"x": np.zeros((3, 1)), "y": [0, 1, 1], "split": [0, 0, 2]}, "split 1 (validation) has no examples"),
    ],
)
def test_npz_validation_messages(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(DataError) as err:
        load_npz(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_npz_refuses_pickled_arrays(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([[0.0], [1.0], [2.0]]), y=np.array([0, 1, 0], dtype=object), split=[0, 1, 2])
    with pytest.raises(DataError, match="field 'y' is an object \\(pickled\\) array"):
        load_npz(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="is a text file, not an .npz archive"):
        load_npz(path)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="not an .npz archive"):
        load_npz(npy)
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "absent.npz")
