"""`memaware train --dataset NAME --data-dir DIR`: end-to-end fine-tuning on every layout's fixture, and its
bad-input errors (one line, exit 2, nothing written)."""

import json

import pytest
from layout_fixtures import make_celeba, make_civilcomments, make_multinli, make_waterbirds, rewrite_metadata

from memaware.cli import main

CASES = {
    "waterbirds": make_waterbirds,
    "celeba": make_celeba,
    "multinli": make_multinli,
    "civilcomments": make_civilcomments,
}
FAST = ["--epochs", "2", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3", "--image-size", "16"]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("method", ["erm", "mat"])
def test_train_end_to_end_on_each_layout(tmp_path, capsys, name, method):
    fx = CASES[name](tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--dataset", name, "--data-dir", str(tmp_path / "data"), "--method", method, *FAST]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["n"] == len(fx["rows"]) and res["data"]["num_attrs"] == fx["num_attrs"]
    assert res["selection"] == "val_wga" and 0 <= res["test"]["worst_group_acc"] <= 1
    assert set(res["criteria"]) >= {"val_wga", "val_worst_class", "val_avg"}
    assert (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()
    if method == "mat":
        assert "val_gi_wga" in res["criteria"] and (out / "inferred_groups.npz").exists()
    if name == "civilcomments":
        assert "duplicated" in printed and res["data"]["duplicated_splits"] == [1, 2]


def test_groupdro_end_to_end_trains_the_backbone(tmp_path, capsys):
    make_waterbirds(tmp_path / "data")
    out = tmp_path / "run"
    base = ["train", "--dataset", "waterbirds", "--data-dir", str(tmp_path / "data"), *FAST, "--quiet"]
    assert main([*base, "--method", "groupdro", "--eta", "0.1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["uses_train_groups"] is True and res["hparams"]["eta"] == 0.1


def _bad_split(header, rows):
    rows[0][header.index("split")] = "7"
    return header, rows


def _no_y(header, rows):
    i = header.index("y")
    return [h for j, h in enumerate(header) if j != i], [[v for j, v in enumerate(r) if j != i] for r in rows]


def _float_y(header, rows):
    rows[1][header.index("y")] = "0.5"
    return header, rows


def _no_val_minority(header, rows):
    # drop every validation row of group (y=1, a=0): va_wga cannot see that group
    s, y, a = (header.index(c) for c in ("split", "y", "a"))
    return header, [r for r in rows if not (str(r[s]) == "1" and str(r[y]) == "1" and str(r[a]) == "0")]


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "metadata_waterbirds.csv"),
        ("bad_split", "split"),
        ("no_y", "'y'"),
        ("float_y", "integers"),
        ("missing_image", "missing"),
        ("no_val_group", "no validation examples"),
    ],
)
def test_bad_real_data_is_one_line_exit_2(tmp_path, capsys, case, message):
    fx = make_waterbirds(tmp_path / "data")
    if case == "missing":
        fx["metadata"].unlink()
    elif case == "missing_image":
        next(fx["images"].rglob("*.jpg")).unlink()
    else:
        edit = {"bad_split": _bad_split, "no_y": _no_y, "float_y": _float_y, "no_val_group": _no_val_minority}[case]
        rewrite_metadata(fx["metadata"], edit)
    out = tmp_path / "run"
    args = ["train", "--dataset", "waterbirds", "--data-dir", str(tmp_path / "data"), "--method", "erm", *FAST]
    code = main([*args, "--selection", "val_wga", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()
