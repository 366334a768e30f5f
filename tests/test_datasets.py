"""Real-dataset layouts: each opens from its standard tree, groups are right, bad inputs give one-line errors."""

import numpy as np
import pytest
import torch
from layout_fixtures import (
    make_celeba,
    make_civilcomments,
    make_multinli,
    make_multinli_caches,
    make_waterbirds,
    rewrite_metadata,
)

from memaware.cli import main
from memaware.data.datasets import DATASETS, open_dataset
from memaware.errors import ConfigError, DataError
from memaware.experiments.convert_multinli import convert

LAYOUTS = {
    "waterbirds": lambda r: make_waterbirds(r),
    "waterbirds-root-metadata": lambda r: make_waterbirds(r, metadata_at_root=True),
    "celeba": lambda r: make_celeba(r),
    "celeba-nested-kaggle": lambda r: make_celeba(r, nested=True, metadata_at_root=False),
    "multinli": lambda r: make_multinli(r),
    "multinli-root-metadata": lambda r: make_multinli(r, metadata_at_root=True),
    "civilcomments": lambda r: make_civilcomments(r),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_opens_with_its_metadata(tmp_path, layout):
    fx = LAYOUTS[layout](tmp_path)
    name = layout.split("-")[0]
    ds = open_dataset(name, tmp_path, image_size=16)
    rows = np.asarray([r[2:] for r in fx["rows"]], dtype=np.int64)  # split, y, a
    d = ds.data
    assert len(ds) == len(rows) and ds.metadata_path == fx["metadata"]
    assert torch.equal(d.x[:, 0], torch.arange(len(rows), dtype=torch.float32)) and d.x.shape == (len(rows), 1)
    assert d.split.tolist() == rows[:, 0].tolist() and d.y.tolist() == rows[:, 1].tolist()
    assert d.a.tolist() == rows[:, 2].tolist()
    assert (d.num_classes, d.num_attrs) == (fx["num_classes"], fx["num_attrs"])
    assert torch.equal(d.group, d.y * d.num_attrs + d.a)
    batch = ds.load(torch.tensor([2, 0, 5]))
    if ds.modality == "image":
        assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32 and torch.isfinite(batch).all()
    elif isinstance(batch, dict):
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(v.dtype == torch.int64 and v.shape == (3, 16) for v in batch.values())
        assert torch.equal(batch["attention_mask"].bool(), batch["input_ids"] != 0)
    else:
        assert batch == [fx["texts"][i] for i in (2, 0, 5)]


def test_registry_names_and_unknown_dataset(tmp_path):
    assert set(DATASETS) == {
        "waterbirds", "celeba", "multinli", "civilcomments", "civilcomments-fine", "fashionbirds", "fashionbirds-easy"
    }
    with pytest.raises(ConfigError, match="unknown dataset 'cub'"):
        open_dataset("cub", tmp_path)


def test_images_are_resized_cropped_and_imagenet_normalised(tmp_path):
    from PIL import Image

    make_waterbirds(tmp_path)
    ds = open_dataset("waterbirds", tmp_path, image_size=16)
    Image.new("RGB", (40, 30), (255, 0, 128)).save(ds.image_dir / ds.files[0], format="JPEG", quality=100)
    img = ds.load([0])[0]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expect = (torch.tensor([255, 0, 128]) / 255.0 - mean) / std
    assert torch.allclose(img.mean(dim=(1, 2)), expect, atol=0.05)


def test_civilcomments_coarse_counts_attributes_over_all_splits(tmp_path):
    fx = make_civilcomments(tmp_path)
    ds = open_dataset("civilcomments", tmp_path)
    d = ds.data
    train, evals = d.split == 0, d.split > 0
    assert set(d.a[train].tolist()) == {0, 1}  # train: 1 = no identity mentioned
    assert set(d.a[evals].tolist()) == set(range(8))  # val/test: one row per mentioned identity
    assert d.num_attrs == 8 and d.num_groups == 16  # a fixed A = 2 would map a = 2..7 onto other groups
    assert ds.duplicated_splits == (1, 2) and ds.has_duplicated_rows
    assert any("duplicated" in n for n in ds.notes)
    # the duplicated rows point at repeated texts; the multi-line, quoted comments survive the CSV round trip
    assert ds.load(list(range(len(ds)))) == fx["texts"]
    assert "\n" in fx["texts"][0] and '"really"' in fx["texts"][0]


def test_civilcomments_fine_file_is_accepted(tmp_path):
    make_civilcomments(tmp_path, fine=True)
    ds = open_dataset("civilcomments", tmp_path)  # no coarse file: falls back to fine and says so
    assert ds.name == "civilcomments-fine" and ds.duplicated_splits == (0, 1, 2)
    assert any("no coarse file" in n for n in ds.notes)
    assert open_dataset("civilcomments-fine", tmp_path).data.num_attrs == 8


def test_multinli_without_conversion_says_what_to_run(tmp_path):
    make_multinli(tmp_path, convert=False)
    with pytest.raises(DataError, match="memaware convert-multinli --data-dir") as e:
        open_dataset("multinli", tmp_path)
    assert "\n" not in str(e.value)


def test_convert_multinli_command_writes_plain_arrays(tmp_path, capsys):
    fx = make_multinli(tmp_path, convert=False)
    assert main(["convert-multinli", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "converted 27 rows (train 9 + dev-matched 9 + dev-mismatched 9; 16 tokens each)" in out
    with np.load(tmp_path / "multinli" / "features_bert_128.npz", allow_pickle=False) as npz:
        assert npz["input_ids"].dtype == np.int32 and npz["input_ids"].shape == (27, 16)
        assert npz["input_mask"].dtype == np.int8 and npz["segment_ids"].dtype == np.int8
        assert npz["label_id"].tolist() == [r[3] for r in fx["rows"]]
    assert open_dataset("multinli", tmp_path).data.num_classes == 3


class _Boom:
    """Unpickling this would create a marker file: the converter must refuse it."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_convert_multinli_refuses_foreign_pickled_code(tmp_path):
    make_multinli(tmp_path, convert=False)
    marker = tmp_path / "PWNED"
    _Boom.marker = marker
    torch.save([_Boom()], tmp_path / "multinli" / "glue_data" / "MNLI" / "cached_dev_bert-base-uncased_128_mnli")
    with pytest.raises(DataError, match=r"refusing to unpickle [\w.]+\.open") as e:
        convert(tmp_path)
    assert "\n" not in str(e.value)
    assert not marker.exists() and not (tmp_path / "multinli" / "features_bert_128.npz").exists()


def test_multinli_labels_must_agree_with_the_caches(tmp_path):
    fx = make_multinli(tmp_path)
    rewrite_metadata(fx["metadata"], lambda h, rows: (h, [r[:3] + [str((int(r[3]) + 1) % 3)] + r[4:] for r in rows]))
    with pytest.raises(DataError, match="do not belong together"):
        open_dataset("multinli", tmp_path)


def test_convert_multinli_missing_caches_named(tmp_path):
    (tmp_path / "multinli").mkdir()
    with pytest.raises(DataError, match="missing cached_train_bert-base-uncased_128_mnli, .*extract"):
        convert(tmp_path)
    make_multinli_caches(tmp_path, [[0, 1], [2], [1]])
    assert convert(tmp_path)["rows"] == 4


def _drop_column(col):
    def edit(header, rows):
        i = header.index(col)
        return header[:i] + header[i + 1 :], [r[:i] + r[i + 1 :] for r in rows]

    return edit


def _set(col, row, value):
    def edit(header, rows):
        rows[row][header.index(col)] = value
        return header, rows

    return edit


def _only_splits(*splits):
    return lambda header, rows: (header, [r for r in rows if int(r[header.index("split")]) in splits])


BAD = {
    "missing column": ("waterbirds", _drop_column("a"), r"missing column\(s\) 'a'; found id, filename, split, y"),
    "unknown split": ("waterbirds", _set("split", 3, "3"), r"column 'split' must be 0 .* found 3 in data row 4"),
    "non-integer label": (
        "celeba",
        _set("y", 0, "blond"),
        r"column 'y' must hold integers, found 'blond' in data row 1",
    ),
    "fractional label": ("celeba", _set("y", 2, "0.5"), r"column 'y' must hold integers, found '0.5'"),
    "label out of range": ("waterbirds", _set("y", 1, "2"), r"column 'y' must be in 0..1, found 2 in data row 2"),
    "empty split": ("waterbirds", _only_splits(0, 1), r"split 2 \(test\) has no rows"),
    "missing image": (
        "waterbirds",
        _set("filename", 5, "001.Species_0/nope.jpg"),
        r"1 of 24 listed images are "
        r"missing under .*waterbird_complete95_forest2water2, e.g. 001.Species_0/nope.jpg",
    ),
    "text index out of range": (
        "civilcomments",
        _set("filename", 0, "999"),
        r"column 'filename' is a row index "
        r"into .*civilcomments_coarse.csv \(55 rows\), found 999",
    ),
    "token index not integer": ("multinli", _set("filename", 0, "x.txt"), r"column 'filename' must hold integers"),
}
MAKERS = {
    "waterbirds": make_waterbirds,
    "celeba": make_celeba,
    "multinli": make_multinli,
    "civilcomments": make_civilcomments,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_give_one_line_errors(tmp_path, case):
    name, edit, pattern = BAD[case]
    fx = MAKERS[name](tmp_path)
    rewrite_metadata(fx["metadata"], edit)
    with pytest.raises(DataError, match=pattern) as e:
        open_dataset(name, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(fx["metadata"]) in msg


def test_missing_dataset_names_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        open_dataset("waterbirds", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and f"no waterbirds under {tmp_path}: looked for " in msg
    assert "waterbirds/metadata_waterbirds.csv" in msg and "waterbirds_v1.0/metadata.csv" in msg
    assert "extract group_DRO's waterbird_complete95_forest2water2.tar.gz" in msg
    with pytest.raises(DataError, match="does not exist"):
        open_dataset("waterbirds", tmp_path / "nowhere")


def test_missing_image_folder_and_text_file(tmp_path):
    fx = make_celeba(tmp_path)
    for f in fx["images"].iterdir():
        f.unlink()
    fx["images"].rmdir()
    with pytest.raises(DataError, match="image folder .*img_align_celeba does not exist \\(unzip"):
        open_dataset("celeba", tmp_path)
    make_civilcomments(tmp_path)
    (tmp_path / "civilcomments" / "civilcomments_coarse.csv").unlink()
    with pytest.raises(DataError, match="civilcomments_coarse.csv: no such file"):
        open_dataset("civilcomments", tmp_path)


def test_cli_bad_data_exits_2_and_writes_nothing(tmp_path, capsys):
    fx = make_waterbirds(tmp_path)
    rewrite_metadata(fx["metadata"], _set("split", 0, "7"))
    out = tmp_path / "feats.npz"
    argv = [
        "features",
        "--dataset",
        "waterbirds",
        "--data-dir",
        str(tmp_path),
        "--backbone",
        "tiny-cnn",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memaware features: error:" in err and "found 7" in err
    assert not out.exists() and not list(tmp_path.glob(".feats.npz*"))
