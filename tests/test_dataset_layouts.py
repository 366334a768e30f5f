"""Every download layout of the four benchmarks, generated from one table per dataset (tests/dataset_trees.py):
each is detected, gives exactly the (split, y, a) rows the community's metadata scripts build, and the same rows
as every other layout; MultiNLI's jsonl path gives the GLUE caches' token ids; partial layouts are one-line errors
naming the missing file and what produces it; `memaware datasets` reports and exports them."""

import json
import shutil

import numpy as np
import pytest
import torch
from dataset_trees import DETECTED, EXPECTED, TABLE, WRITERS, celeba_csv, write_tokenizer

from memaware.cli import main
from memaware.data.datasets import open_dataset
from memaware.data.datasets.inventory import inspect
from memaware.errors import ConfigError, DataError
from memaware.experiments.convert_multinli import convert

CASES = [(name, layout) for name, layouts in WRITERS.items() for layout in layouts]


def build(name, layout, root):
    """Writes the layout; MultiNLI's token arrays are converted as a user would (caches, or jsonl + tokenizer)."""
    folder = WRITERS[name][layout](root)
    if name == "multinli":
        jsonl = "jsonl" in layout
        convert(root, tokenizer=write_tokenizer(root / "tok") if jsonl else None)
    return folder


def rows_of(ds):
    d = ds.data
    return np.stack([d.split.numpy(), d.y.numpy(), d.a.numpy()], axis=1).astype(np.int64)


@pytest.mark.parametrize("where", ["root", "folder"])
@pytest.mark.parametrize(("name", "layout"), CASES)
def test_every_layout_gives_the_scripts_rows(tmp_path, name, layout, where):
    folder = build(name, layout, tmp_path)
    data_dir = tmp_path if where == "root" else folder
    ds = open_dataset(name, data_dir, image_size=8)
    assert np.array_equal(rows_of(ds), EXPECTED[name])
    entry = inspect(data_dir, (name,))[0]
    assert entry["status"] == "ok" and entry["layout"] == DETECTED.get((name, layout), layout)
    batch = ds.load([1, 0])
    if name in ("waterbirds", "celeba"):
        assert batch.shape == (2, 3, 8, 8) and torch.isfinite(batch).all()
    elif name == "civilcomments":
        texts = [r["text"] for r in TABLE["civilcomments"] if r["split"] == "train"]
        assert batch == [texts[1], texts[0]] and "\n" in batch[0]
    else:
        assert batch["input_ids"].shape == (2, 128) and (batch["input_ids"][:, 0] == 2).all()  # [CLS]


def test_layouts_agree_with_each_other_and_with_the_table_counts(tmp_path):
    for name, layouts in WRITERS.items():
        seen = []
        for layout in layouts:
            root = tmp_path / name / layout
            build(name, layout, root)
            seen.append(rows_of(open_dataset(name, root, image_size=8)))
        assert all(np.array_equal(seen[0], s) for s in seen[1:]), name
    # CivilComments: train once per comment; val/test once per mentioned identity, none-mentioning ones dropped
    cc = EXPECTED["civilcomments"]
    assert (cc[:, 0] == 0).sum() == sum(r["split"] == "train" for r in TABLE["civilcomments"])
    assert set(cc[cc[:, 0] > 0, 2].tolist()) == set(range(8))


def test_multinli_jsonl_token_ids_equal_the_glue_caches(tmp_path):
    WRITERS["multinli"]["group_dro"](tmp_path / "caches")
    cached = convert(tmp_path / "caches")
    WRITERS["multinli"]["group_dro-jsonl"](tmp_path / "jsonl")
    tokenized = convert(tmp_path / "jsonl", tokenizer=write_tokenizer(tmp_path / "tok"))
    assert tokenized["source"] == "the MultiNLI 1.0 jsonl files" and cached["source"] == "the pickled GLUE caches"
    assert tokenized["file_rows"] == dict(zip(tokenized["file_rows"], cached["file_rows"].values(), strict=True))
    with np.load(cached["out"]) as a, np.load(tokenized["out"]) as b:
        for key in ("input_ids", "input_mask", "segment_ids", "label_id"):
            assert np.array_equal(a[key], b[key]), key
        assert a["input_ids"].shape[1] == 128
        truncated = a["input_mask"].sum(axis=1) == 128
        assert truncated.any() and (a["input_ids"] == 1).any()  # the long pair was cut; [UNK] occurs
    notes = inspect(tmp_path / "jsonl", ("multinli",))[0]["notes"]
    assert notes == ["token arrays converted from the MultiNLI 1.0 jsonl files"]


def test_tokenising_in_chunks_gives_the_same_word_pieces(tmp_path):
    from memaware.data.datasets.multinli_release import load_tokenizer, word_pieces

    tok = load_tokenizer(write_tokenizer(tmp_path / "tok"))
    texts = [r[k] for r in TABLE["multinli"] for k in ("sentence1", "sentence2")]
    assert word_pieces(tok, texts, chunk=2) == word_pieces(tok, texts) == tok(texts, add_special_tokens=False)[
        "input_ids"
    ]


def test_tokenizer_folder_without_vocabulary_is_refused(tmp_path, capsys):
    WRITERS["multinli"]["group_dro-jsonl"](tmp_path)
    empty = tmp_path / "tok"
    empty.mkdir()
    (empty / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"--tokenizer .*tok: no vocab.txt or tokenizer.json in it") as e:
        convert(tmp_path, tokenizer=empty)
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit) as stop:  # a missing folder is refused by the parser, before any work
        main(["convert-multinli", "--data-dir", str(tmp_path), "--tokenizer", str(tmp_path / "nope")])
    assert stop.value.code == 2
    assert "--tokenizer" in (err := capsys.readouterr().err) and "no such directory" in err
    assert not (tmp_path / "multinli" / "features_bert_128.npz").exists()


def test_celeba_lists_in_another_order_are_matched_by_file_name(tmp_path):
    folder = tmp_path / "celebA_v1.0"
    WRITERS["celeba"]["wilds"](tmp_path)
    n = len(TABLE["celeba"])
    celeba_csv(folder, crlf=True, attr_order=list(reversed(range(n))))
    assert np.array_equal(rows_of(open_dataset("celeba", tmp_path, image_size=8)), EXPECTED["celeba"])


def _drop(rel):
    def edit(root):
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return edit


def _replace(rel, old, new):
    def edit(root):
        path = root / rel
        path.write_text(path.read_text().replace(old, new, 1))

    return edit


PARTIAL = {  # (dataset, layout, edit, what the one-line message must name)
    "celeba official without partition list": (
        "celeba", "official", _drop("celeba/list_eval_partition.txt"),
        ("list_eval_partition.txt: not found", "list_attr_celeba.txt is there", "published CelebA Eval/"),
    ),
    "celeba kaggle without partition csv": (
        "celeba", "kaggle", _drop("celeba/list_eval_partition.csv"),
        ("list_eval_partition.csv: not found", "Kaggle CelebA archive or WILDS"),
    ),
    "celeba official without images": (
        "celeba", "official", _drop("celeba/img_align_celeba"),
        ("img_align_celeba does not exist", "unzip img_align_celeba.zip"),
    ),
    "celeba count line wrong": (
        "celeba", "official", _replace("celeba/list_attr_celeba.txt", "24\n", "25\n"),
        ("says 25 images but 24 rows follow",),
    ),
    "waterbirds tarball without images": (
        "waterbirds", "tarball", _drop("waterbirds/waterbird_complete95_forest2water2/001.Species_0"),
        ("listed images are missing", "extract waterbird_complete95_forest2water2.tar.gz"),
    ),
    "waterbirds release metadata without place": (
        "waterbirds", "wilds", _replace("waterbirds_v1.0/metadata.csv", ",place,", ",where,"),
        ("missing column(s) 'place'", "waterbird_complete95_forest2water2.tar.gz"),
    ),
    "multinli caches not converted": (
        "multinli", "group_dro", _drop("multinli/features_bert_128.npz"),
        ("features_bert_128.npz: not found", "memaware convert-multinli --data-dir"),
    ),
    "multinli jsonl not tokenised": (
        "multinli", "group_dro-jsonl", _drop("multinli/features_bert_128.npz"),
        ("features_bert_128.npz: not found", "--tokenizer DIR"),
    ),
    "multinli metadata without token source": (
        "multinli", "group_dro", lambda r: (_drop("multinli/features_bert_128.npz")(r), _drop("multinli/glue_data")(r)),
        ("features_bert_128.npz: not found", "multinli_bert_features.tar.gz", "multinli_1.0_train.jsonl"),
    ),
    "civilcomments metadata without texts": (
        "civilcomments", "standard", _drop("civilcomments/civilcomments_coarse.csv"),
        ("civilcomments_coarse.csv: no such file", "XRM / SubpopBench set-up scripts"),
    ),
    "civilcomments release with another split name": (
        "civilcomments", "wilds", _replace("civilcomments_v1.0/all_data_with_identities.csv", ",val,", ",dev,"),
        ("column 'split' must be train, val or test, found 'dev'",),
    ),
}


@pytest.mark.parametrize("case", list(PARTIAL))
def test_partial_layouts_name_the_missing_file_and_its_source(tmp_path, case, capsys):
    name, layout, edit, fragments = PARTIAL[case]
    build(name, layout, tmp_path)
    edit(tmp_path)
    with pytest.raises(DataError) as e:
        open_dataset(name, tmp_path, image_size=8)
    msg = str(e.value)
    assert "\n" not in msg and all(f in msg for f in fragments), msg
    entry = inspect(tmp_path, (name,))[0]
    assert entry["status"] == "incomplete"
    argv = ["train", "--dataset", name, "--data-dir", str(tmp_path), "--backbone",
            "tiny-text" if name in ("multinli", "civilcomments") else "tiny-cnn", "--method", "erm",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragments[0] in err and not (tmp_path / "run" / "results.json").exists()


def test_multinli_jsonl_without_metadata_random_says_where_it_comes_from(tmp_path):
    WRITERS["multinli"]["group_dro-jsonl"](tmp_path)
    (tmp_path / "multinli" / "data" / "metadata_random.csv").unlink()
    with pytest.raises(DataError, match=r"metadata_random.csv: not found \(group_DRO's dataset_metadata/multinli/"):
        convert(tmp_path, tokenizer=write_tokenizer(tmp_path / "tok"))


def test_datasets_command_reports_every_dataset(tmp_path, capsys):
    for name, layout in (("waterbirds", "wilds"), ("celeba", "kaggle"), ("civilcomments", "release")):
        build(name, layout, tmp_path)
    assert main(["datasets", "--data-dir", str(tmp_path), "--json", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "r.json").read_text())
    by_name = {e["dataset"]: e for e in report["datasets"]}
    assert [e["dataset"] for e in report["datasets"]] == ["waterbirds", "celeba", "multinli", "civilcomments"]
    assert by_name["multinli"]["status"] == "missing" and "metadata_random.csv" in by_name["multinli"]["message"]
    for name in ("waterbirds", "celeba", "civilcomments"):
        e, exp = by_name[name], EXPECTED[name]
        for code, split in enumerate(("train", "val", "test")):
            rows = exp[exp[:, 0] == code]
            assert e["rows"][split] == len(rows)
            pairs, counts = np.unique(rows[:, 1:], axis=0, return_counts=True)
            assert e["groups"][split] == {f"y={y},a={a}": int(n) for (y, a), n in zip(pairs, counts, strict=True)}
    assert by_name["waterbirds"]["group_names"]["train"]["y=1,a=0"] == "waterbird / land"
    assert by_name["civilcomments"]["group_names"]["train"]["y=0,a=1"] == "non-toxic / no identity"
    # the table: one block per dataset, with the missing one's one-line reason
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "waterbirds    ok         wilds: WILDS' waterbirds_v1.0/ bundle" in out
    assert "multinli      missing    no multinli under" in out and "landbird / land" in out
    # one missing image is counted and named
    next((tmp_path / "celeba" / "img_align_celeba" / "img_align_celeba").iterdir()).unlink()
    e = inspect(tmp_path, ("celeba",))[0]
    assert e["status"] == "incomplete" and e["missing_inputs"]["count"] == 1


def test_export_writes_the_standard_files_that_read_back_the_same(tmp_path, capsys):
    for name, layout in (("waterbirds", "tarball"), ("celeba", "official"), ("civilcomments", "wilds")):
        build(name, layout, tmp_path / "raw")
    WRITERS["multinli"]["group_dro"](tmp_path / "raw")
    out = tmp_path / "std"
    assert main(["datasets", "--data-dir", str(tmp_path / "raw"), "--export", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    header = "id,filename,split,y,a"
    for name in ("waterbirds", "celeba", "multinli"):
        text = (out / name / f"metadata_{name}.csv").read_text().splitlines()
        assert text[0] == header and len(text) == len(EXPECTED[name]) + 1
        got = np.asarray([line.split(",")[2:] for line in text[1:]], dtype=np.int64)
        assert np.array_equal(got, EXPECTED[name]), name
    assert (out / "waterbirds" / "metadata_waterbirds.csv").read_text().splitlines()[1].startswith(
        f"{TABLE['waterbirds'][0]['img_id']},{TABLE['waterbirds'][0]['img_filename']},"
    )
    # CivilComments' export is the coarse pair (metadata + texts), which memaware reads back unchanged
    (tmp_path / "civil").mkdir()
    shutil.copytree(out / "civilcomments", tmp_path / "civil" / "civilcomments")
    back = open_dataset("civilcomments", tmp_path / "civil")
    assert np.array_equal(rows_of(back), EXPECTED["civilcomments"])
    assert back.load([0])[0] == TABLE["civilcomments"][0]["text"]
    # never overwrites: a second export names the file and writes nothing
    assert main(["datasets", "--data-dir", str(tmp_path / "raw"), "--export", str(out), "--quiet"]) == 2
    assert "exists; remove it" in capsys.readouterr().err


def test_datasets_command_bad_path_exits_2_with_one_line(tmp_path, capsys):
    # paths are checked by the parser, before any dataset is read
    for argv, message in [
        (["--data-dir", str(tmp_path / "nowhere")], f"{tmp_path / 'nowhere'}: no such directory"),
        (["--data-dir", str(tmp_path), "--out", str(tmp_path)], "--out"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["datasets", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--dataset", "cub"], "invalid choice: 'cub'"), (["--bogus"], "unrecognized arguments: --bogus")],
)
def test_datasets_command_bad_flags_exit_2_with_one_line(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["datasets", "--data-dir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err


def test_datasets_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["datasets", "--help"])
    out = capsys.readouterr().out
    for flag in ("--data-dir", "--dataset", "--json", "--out", "--export", "--quiet"):
        assert flag in out
