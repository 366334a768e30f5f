"""A user's own problem: their images from one CSV, their own network named as module:name, through `memaware
train` and `fit(..., backbone=)`. On a small spurious image problem (a faint ring or bar on a background colour
that agrees with the glyph for 90 % of the training images, 50 % at test, with per-image pixel noise; 1,000 PNGs;
a CSV with class and split names) and a small CNN defined in the test's own module, ERM fits its training
minority by memorizing and fails at test, and MAT beats ERM's test worst-group accuracy by >= 0.25. Every bad table
and bad backbone is refused in one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from memaware import TrainConfig, fit
from memaware.cli import main
from memaware.data.datasets import load_table, open_dataset
from memaware.data.spurious_images import write_spurious_images
from memaware.errors import ConfigError, DataError

USER_MODULE = textwrap.dedent(
    '''
    """A user's own networks (and a few broken ones) for memaware's tests."""
    import torch
    from torch import nn


    class Net(nn.Module):
        """(b, 3, 32, 32) -> (b, 64): two strided 3x3 convolutions, then a dense layer on the flattened maps."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(),
            )

        def forward(self, x):
            return self.body(x)


    def make_net():
        return Net()


    class NoPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)


    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 4)

        def forward(self, x):
            return self.fc(x)


    def not_a_module():
        return 3


    instance = Net()


    class Words(nn.Module):
        """A list of b strings -> (b, 8): a bag of hashed characters."""

        def __init__(self):
            super().__init__()
            self.emb = nn.EmbeddingBag(64, 8)

        def forward(self, texts):
            ids = [torch.tensor([ord(c) % 64 for c in t] or [0]) for t in texts]
            offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
            return self.emb(torch.cat(ids), offsets)
    '''
)
FAST = ["--epochs", "30", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "64"]


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    csv_path = write_spurious_images(root / "data", seed=0)
    (root / "usernet.py").write_text(USER_MODULE)
    return csv_path, root


@pytest.fixture
def user_module(problem, monkeypatch):
    monkeypatch.syspath_prepend(str(problem[1]))
    return "usernet"


def _train(capsys, *argv):
    code = main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_mat_beats_erm_on_a_users_csv_with_their_cnn(problem, user_module, tmp_path, capsys):
    csv_path, _ = problem
    results = {}
    for method in ("erm", "mat"):
        code, out, _ = _train(
            capsys, "--data", str(csv_path), "--backbone", "usernet:Net", "--method", method, *FAST,
            "--out", str(tmp_path / method),
        )  # fmt: skip
        assert code == 0
        results[method] = json.loads((tmp_path / method / "results.json").read_text())
    erm, mat = (results[m]["test"]["worst_group_acc"] for m in ("erm", "mat"))
    assert mat - erm >= 0.25, (erm, mat)
    data = results["mat"]["data"]
    assert data["label_names"] == ["bar", "ring"] and data["attr_names"] == ["green", "red"]
    assert data["backbone"] == "usernet:Net" and data["image_size"] == 32 and data["normalize"] == "none"
    assert "images used at their own size 32x32 (no resize)" in out
    assert "a=0 (green)" in out or "a=1 (red)" in out  # the worst group is named with the table's names


def test_fit_with_a_backbone_class_and_single_run_mat(problem, user_module):
    import usernet

    ds = load_table(problem[0])
    cfg = TrainConfig(epochs=1, optimizer="adam", lr=1e-3, batch_size=64, seed=3)
    two = fit(ds, "mat", cfg, backbone=usernet.Net)
    one = fit(ds, "mat", cfg, backbone=usernet.make_net, mode="single-run")
    assert two.model.heads.num_heads == 1 and one.model.heads.num_heads == 3
    again = fit(ds, "mat", cfg, backbone=usernet.Net)  # same seed, same numbers
    assert again.selection_reports["val_wga"]["test"] == two.selection_reports["val_wga"]["test"]
    start = usernet.Net()  # an instance is copied for each model: the caller's weights are not trained
    before = {k: v.clone() for k, v in start.state_dict().items()}
    fit(ds, "erm", cfg, backbone=start)
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())


def test_single_run_needs_model_parts_and_shapes_are_checked(problem, user_module):
    import usernet

    ds = load_table(problem[0])
    cfg = TrainConfig(epochs=1, batch_size=64)

    class Plain(torch.nn.Module):
        def __init__(self, heads):
            super().__init__()
            self.net, self.heads_n = usernet.Net(), heads
            self.fc = torch.nn.Linear(64, 2 * heads)

        def forward(self, x):
            rows = x[:, 0].long()
            return self.fc(self.net(ds.load(rows))).view(len(x), self.heads_n, 2)

    with pytest.raises(ConfigError, match=r"single-run.*needs a model with features.*Plain has no features"):
        fit(ds, "mat", cfg, model_factory=Plain, mode="single-run")
    shape = r"must give a model returning \(b, num_heads, K\) = \(2, 1, 2\).*got \(2, 3, 2\)"
    with pytest.raises(ConfigError, match=shape):
        fit(ds, "erm", cfg, model_factory=lambda h: Plain(3))
    with pytest.raises(ConfigError, match="pass backbone="):
        fit(ds, "erm", cfg)


BAD_TABLES = {
    "missing_y": (lambda r: [{k: v for k, v in x.items() if k != "y"} for x in r], r"missing column\(s\) 'y'"),
    "no_inputs": (lambda r: [{k: v for k, v in x.items() if k != "filename"} for x in r],
                  r"missing column 'filename' \(image paths\) or 'text'"),
    "bad_split": (lambda r: _set(r, 3, "split", "training_set"), r"data row 4, column 'split': unknown split"),
    "empty_label": (lambda r: _set(r, 5, "y", ""), r"data row 6, column 'y': empty label"),
    "typo_label": (lambda r: _set(r, len(r) - 1, "y", "rnig"),
                   r"data row 1000, column 'y': label 'rnig' appears in the test split only"),
    "gap": (lambda r: [dict(x, y={"bar": "0", "ring": "2"}[x["y"]]) for x in r], "none equal to 1"),
    "one_class": (lambda r: [dict(x, y="ring") for x in r], "single label 'ring'"),
    "missing_image": (lambda r: _set(r, 7, "filename", "images/nope.png"),
                      r"data row 8, column 'filename': no such file .*nope.png"),
    "unreadable_image": (lambda r: _set(r, 9, "filename", "notes.png"),
                         r"data row 10, column 'filename': .*notes.png is not an image PIL can read"),
    "no_val": (lambda r: [dict(x, split="test" if x["split"] == "val" else x["split"]) for x in r],
               "column 'split' has no validation rows"),
    "both_inputs": (lambda r: [dict(x, text="hello") for x in r], "has both a 'filename' and a 'text' column"),
    "mixed_sizes": (lambda r: _set(r, 2, "filename", "big.png"), r"images differ in size .*--image-size S"),
}


def _set(rows, i, key, value):
    rows[i][key] = value
    return rows


def _rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def _write(path, rows):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_are_refused_in_one_line(case, problem, user_module, tmp_path, capsys):
    from PIL import Image

    csv_path, _ = problem
    change, message = BAD_TABLES[case]
    table = csv_path.parent / f"bad_{case}.csv"
    (csv_path.parent / "notes.png").write_text("not an image")
    Image.new("RGB", (48, 40)).save(csv_path.parent / "big.png")
    _write(table, change(_rows(csv_path)))
    out = tmp_path / "run"
    code, stdout, err = _train(capsys, "--data", str(table), "--backbone", "usernet:Net", "--method", "erm",
                               "--out", str(out))  # fmt: skip
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and str(table) in err, err
    assert __import__("re").search(message, err), err
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(DataError):
        load_table(table)


BAD_BACKBONES = {
    "usernet_missing:Net": r"cannot import module 'usernet_missing'",
    "usernet:Nope": r"module 'usernet' has no attribute 'Nope'",
    "usernet:NoPool": r"must map images \(2, 3, 32, 32\) float32 to \(b, d\) features; it returned a tensor of shape "
    r"\(2, 8, 16, 16\)",
    "usernet:Broken": r"backbone 'usernet:Broken' failed on images \(2, 3, 32, 32\) float32 \(RuntimeError",
    "usernet:not_a_module": r"returned a int, not a torch.nn.Module",
    "usernet:instance": r"is an nn.Module instance; give its class",
    "tiny-text": r"backbone 'tiny-text' takes text input but the data is image",
    "nets.py:Net": r"no such file nets.py",
}


@pytest.mark.parametrize("backbone", sorted(BAD_BACKBONES))
def test_bad_backbones_are_refused_in_one_line(backbone, problem, user_module, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _train(capsys, "--data", str(problem[0]), "--backbone", backbone, "--method", "mat",
                               "--out", str(out))  # fmt: skip
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(BAD_BACKBONES[backbone], err), err
    assert not out.exists() or not any(out.iterdir())


def test_flags_that_do_not_apply_are_refused(problem, user_module, tmp_path, capsys):
    code, _, err = _train(capsys, "--data", str(problem[0]), "--backbone", "usernet:Net", "--weights",
                          str(problem[0]), "--method", "erm", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "--weights applies to memaware's backbones" in err
    code, _, err = _train(capsys, "--data", str(problem[0]), "--hidden", "8", "--method", "erm",
                          "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "--hidden shapes the head" in err


def test_console_script_finds_a_module_in_the_current_folder(problem):
    csv_path, root = problem
    exe = Path(sys.executable).with_name("memaware")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(exe), "train", "--data", str(csv_path), "--backbone", "usernet:Net", "--method", "erm", "--epochs", "1",
         "--out", "r1", "--quiet"],
        cwd=root, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    by_path = subprocess.run(
        [str(exe), "train", "--data", str(csv_path), "--backbone", f"{root / 'usernet.py'}:Net", "--method", "erm",
         "--epochs", "1", "--out", "r2", "--quiet"],
        cwd=csv_path.parent, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert by_path.returncode == 0, by_path.stderr
    first, second = (
        json.loads((d / "results.json").read_text())["test"]
        for d in (root / "r1", csv_path.parent / "r2")
    )
    assert first == second  # same seed, same network, same numbers whichever way it was named


def test_image_size_resize_and_normalisation(problem):
    csv_path, _ = problem
    stretch = load_table(csv_path, image_size=16)
    crop = load_table(csv_path, image_size=16, resize="crop")
    norm = load_table(csv_path, normalize="imagenet")
    plain = load_table(csv_path)
    assert stretch.load([0, 1]).shape == (2, 3, 16, 16) and crop.load([0]).shape == (1, 3, 16, 16)
    x, xn = plain.load([0]), norm.load([0])
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(xn.min()) < 0.0
    assert "stretch" in " ".join(stretch.notes) and "centre-cropped" in " ".join(crop.notes)
    assert open_dataset(str(csv_path)).data.num_classes == 2
    with pytest.raises(ConfigError, match="--resize must be one of"):
        load_table(csv_path, image_size=16, resize="squash")


def test_imagefolder_tree_and_text_table(problem, user_module, tmp_path, capsys):
    import shutil

    rows = _rows(problem[0])
    for r in rows[:40] + rows[600:620] + rows[800:820]:
        dest = tmp_path / "tree" / r["split"] / r["y"]
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(problem[0].parent / r["filename"], dest)
    ds = load_table(tmp_path / "tree")
    assert ds.label_names == ["bar", "ring"] and len(ds) == 80 and (ds.data.a == -1).all()
    assert main(["datasets", "--data", str(tmp_path / "tree")]) == 0
    assert "train       40 rows: bar " in capsys.readouterr().out
    assert main(["datasets", "--data", str(problem[0])]) == 0
    counts = "train      400 rows: bar / green 181, bar / red 19, ring / green 21, ring / red 179"
    assert counts in capsys.readouterr().out
    code, _, err = _train(capsys, "--data", str(tmp_path / "tree"), "--backbone", "usernet:Net", "--method", "mat",
                          "--epochs", "1", "--out", str(tmp_path / "tree_run"), "--quiet")  # fmt: skip
    assert code == 0, err
    res = json.loads((tmp_path / "tree_run" / "results.json").read_text())
    assert res["selection"] == "val_gi_wga"  # no attribute: MAT selects with XRM-inferred groups
    texts = [{"text": f"{'good' if i % 2 else 'bad'} film number {i}", "y": "pos" if i % 2 else "neg",
              "split": ("train", "valid", "test")[i % 3]} for i in range(60)]  # fmt: skip
    _write(tmp_path / "texts.csv", texts)
    for backbone in ("tiny-text", "usernet:Words"):
        code, _, err = _train(capsys, "--data", str(tmp_path / "texts.csv"), "--backbone", backbone, "--method",
                              "erm", "--epochs", "2", "--out", str(tmp_path / backbone.replace(":", "_")), "--quiet")
        assert code == 0, err


def test_an_xrm_run_saves_heldout_logits_for_matloss(tmp_path, capsys):
    import numpy as np

    from memaware import MATLoss, load_npz, make_setup21

    make_setup21(n_train=120, n_val=60, n_test=60, noise_dim=40, seed=0).save_npz(tmp_path / "d.npz")
    code, _, err = _train(capsys, "--data", str(tmp_path / "d.npz"), "--method", "xrm", "--epochs", "5",
                          "--out", str(tmp_path / "xrm"), "--quiet")  # fmt: skip
    assert code == 0, err
    data = load_npz(tmp_path / "d.npz")
    with np.load(tmp_path / "xrm" / "heldout_logits.npz", allow_pickle=False) as f:
        heldout, rows = torch.from_numpy(f["heldout_logits"]), f["train_rows"]
    assert heldout.shape == (120, 2) and (rows == data.indices(0).numpy()).all()
    loss = MATLoss(heldout, data.y[rows])(torch.zeros(4, 2), data.y[rows[:4]], torch.arange(4))
    assert torch.isfinite(loss)


def test_features_of_a_table_with_the_users_network(problem, user_module, tmp_path, capsys):
    import numpy as np

    out = tmp_path / "f.npz"
    assert main(["features", "--data", str(problem[0]), "--backbone", "usernet:Net", "--out", str(out)]) == 0
    assert "with usernet:Net" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as f:
        assert f["x"].shape == (1000, 64) and np.isfinite(f["x"]).all() and sorted(set(f["a"].tolist())) == [0, 1]
    code = main(["features", "--data", str(problem[0]), "--backbone", "tiny-text", "--out", str(tmp_path / "g.npz")])
    assert code == 2 and "takes text input but the data is image" in capsys.readouterr().err
    assert not (tmp_path / "g.npz").exists()


def test_sweep_and_table_on_a_users_csv(problem, user_module, tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--data", str(problem[0]), "--backbone", "usernet:Net", "--methods", "erm,mat",
                 "--n-hparams", "1", "--seeds", "1", "--set", "epochs=1", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert main(["table", "--sweep", str(out), "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    assert "| ERM |" in table and "| MAT |" in table
    code = main(["sweep", "--data", str(problem[0]), "--backbone", "usernet:NoPool", "--out", str(tmp_path / "bad")])
    assert code == 2 and "returned a tensor of shape (2, 8, 16, 16)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
