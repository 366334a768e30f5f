"""End-to-end training at the speed of the network: images decoded once (in memory or a memory-mapped cache file
keyed by the files and the transform), batches loaded in the background, autocast precision, and the per-run
throughput. Each speed-up must leave the numbers of an fp32 run exactly as they were: decoding every batch again
in the step (``decode_cache='off'``, ``prefetch=0``) is the reference."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from memaware import TrainConfig, fit, load_table
from memaware.cli import main
from memaware.data import TEST, TRAIN, VAL
from memaware.data.datasets.common import to_normalized_array
from memaware.data.datasets.decoded import build_decoded, cache_key
from memaware.data.spurious_images import write_spurious_images
from memaware.engine.progress import RunProgress, summary_line
from memaware.errors import ConfigError
from memaware.models.backbones import EndToEndNet


class SmallCNN(nn.Module):
    """(b, 3, 16, 16) -> (b, 16)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    return write_spurious_images(root / "imgs", n_train=96, n_val=40, n_test=40, size=16, seed=1)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEMAWARE_CACHE_DIR", str(folder))
    return folder


def _reference(ds, rows) -> torch.Tensor:
    """Rows decoded the way every batch was before decode-once: PIL, the transform, to_normalized_array."""
    arrays = []
    for r in rows:
        with Image.open(ds.image_dir / ds.files[r]) as img:
            arrays.append(to_normalized_array(ds.transform(img.convert("RGB")), ds.normalize))
    return torch.from_numpy(np.stack(arrays))


@pytest.mark.parametrize("normalize", ["none", "imagenet"])
@pytest.mark.parametrize("mode", ["auto", "memory", "disk", "off"])
def test_decoded_batches_equal_decoding_each_time(images, normalize, mode):
    ds = load_table(images, normalize=normalize, image_size=12, resize="crop")
    ds.configure_decoding(mode)
    rows = np.array([3, 0, 170, 95, 3])
    got = ds.load(rows)
    assert got.dtype == torch.float32 and got.shape == (5, 3, 12, 12) and got.is_contiguous()
    assert torch.equal(got, _reference(ds, rows))  # to the bit
    if mode == "off":
        assert ds.decoded_images is None
    else:
        assert len(ds.decoded()) == len(ds)


def test_disk_cache_is_reused_and_keyed_by_files_and_transform(images, cache_dir):
    ds = load_table(images)
    ds.configure_decoding("disk")
    ds.load([0])
    path = Path(ds.decoded().where)
    assert path.parent == cache_dir / "decoded" and path.is_file()
    # another process (here: another dataset object) reads the file instead of decoding
    again = load_table(images)
    again.configure_decoding("disk")
    calls = []
    again.decode_uint8 = lambda i: calls.append(i)  # would fail if called: nothing is decoded again
    assert torch.equal(again.load([5, 7]), ds.load([5, 7]))
    assert not calls
    # a changed file, or another transform, gives another key: a stale cache is never read
    key = cache_key(ds.image_dir, ds.files, ds.transform_id)
    first = ds.image_dir / ds.files[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    assert cache_key(ds.image_dir, ds.files, ds.transform_id) != key
    assert cache_key(ds.image_dir, ds.files, ds.transform_id + "x") != key


def test_a_torn_cache_file_is_decoded_again(tmp_path):
    decode = lambda i: np.full((3, 2, 2), i, dtype=np.uint8)  # noqa: E731
    build_decoded(4, (3, 2, 2), decode, lambda: "k", "disk", folder=tmp_path)
    (tmp_path / "k.npy").write_bytes(b"truncated")
    again = build_decoded(4, (3, 2, 2), decode, lambda: "k", "disk", folder=tmp_path)
    assert [int(again.array[i, 0, 0, 0]) for i in range(4)] == [0, 1, 2, 3]


def test_bad_decode_cache_is_one_line(images):
    ds = load_table(images)
    with pytest.raises(ConfigError, match="--decode-cache must be one of auto, memory, disk, off, got 'ram'"):
        ds.configure_decoding("ram")


def _fit(images, method="erm", decode="auto", prefetch=2, precision="fp32", **cfg):
    ds = load_table(images)
    ds.configure_decoding(decode)
    config = TrainConfig(
        epochs=2, lr=1e-2, optimizer="adam", batch_size=16, seed=0, eval_batch_size=32, prefetch=prefetch,
        precision=precision, **cfg,
    )  # fmt: skip
    res = fit(ds, method, config, backbone=SmallCNN)
    return res, res.predict_logits(ds.data.x[ds.data.indices(TEST)])


@pytest.mark.parametrize("method,extra", [("erm", {}), ("mat", {"eval_every_steps": 5})])
def test_decode_once_and_prefetch_leave_the_numbers_unchanged(images, method, extra):
    """fp32: the same test logits, selection and history as decoding every batch in the step; MAT (XRM phase
    first, evaluations mid-epoch that interleave with the epoch's announced batches) included."""
    threads = threading.active_count()
    ref, ref_logits = _fit(images, method, decode="off", prefetch=0, **extra)
    new, new_logits = _fit(images, method, decode="auto", prefetch=2, **extra)
    assert torch.equal(ref_logits, new_logits)
    assert ref.selected_epoch == new.selected_epoch and ref.history == new.history
    assert threading.active_count() == threads  # no loader thread outlives the run (forking stays possible)
    t = new.throughput
    assert t["images"] == 2 * 96 and t["images_per_s"] > 0 and len(t["epoch_s"]) == 2
    assert set(t) == {"images", "seconds", "images_per_s", "data_wait_s", "evaluation_s", "step_s", "epoch_s"}
    if method == "mat":
        assert new.phases["xrm"].throughput["images"] == 2 * 96


def test_bf16_autocast_on_cpu_lands_near_fp32(images):
    """bf16 autocast trains end to end on a CPU; stated tolerance: test logits within 0.1 of fp32's (max abs),
    the same test predictions on >= 95 % of rows, features and logits in float32."""
    ref, ref_logits = _fit(images, precision="fp32")
    low, low_logits = _fit(images, precision="bf16")
    assert low_logits.dtype == torch.float32
    assert float((low_logits - ref_logits).abs().max()) < 0.1
    agree = (low_logits.argmax(1) == ref_logits.argmax(1)).float().mean()
    assert agree >= 0.95


def test_fp16_trains_with_a_grad_scaler_kept_in_the_checkpoint(images, tmp_path):
    ds = load_table(images)
    cfg = TrainConfig(epochs=2, lr=1e-2, optimizer="adam", batch_size=32, seed=0, precision="fp16")
    run = fit(ds, "erm", cfg, backbone=SmallCNN, checkpoint=tmp_path / "a.pt", checkpoint_every=1)
    state = torch.load(tmp_path / "a.pt", weights_only=True)
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    x = ds.data.x[ds.data.indices(TEST)]
    assert torch.isfinite(run.predict_logits(x)).all()
    again = fit(ds, "erm", cfg, backbone=SmallCNN, checkpoint=tmp_path / "a.pt")  # resumed, nothing left to train
    assert again.resumed_from == 2 and torch.equal(again.predict_logits(x), run.predict_logits(x))


def test_precision_needs_an_end_to_end_model(images, small_noisy):
    with pytest.raises(ConfigError, match="apply to end-to-end runs"):
        fit(small_noisy, "erm", TrainConfig(epochs=1, precision="bf16"))
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="prefetch must be >= 0"):
        TrainConfig(prefetch=-1)
    ds = load_table(images)

    class Own(nn.Module):  # a caller's own (b, H, K) model: memaware cannot put its backbone under autocast
        def __init__(self, heads):
            super().__init__()
            self.inner = EndToEndNet(ds, SmallCNN(), 16, 2, heads)

        def forward(self, x):
            return self.inner(x)

    with pytest.raises(ConfigError, match="need memaware's end-to-end model: pass backbone="):
        fit(ds, "erm", TrainConfig(epochs=1, precision="bf16"), model_factory=Own)


def test_feed_serves_announced_batches_and_loads_others_on_the_spot(images):
    ds = load_table(images)
    model = EndToEndNet(ds, SmallCNN(), 16, 2)
    x = ds.data.x
    batches = [x[[4, 2]], x[[9, 1, 0]]]
    model.prefetch(batches)
    surprise = model.features(x[[7]])  # not announced: loaded now, the queue untouched
    assert len(model.feed.pending) == 2
    with model.prefetch_nested([x[[5]]]):  # an evaluation in between keeps the epoch's batches for after it
        model.features(x[[5]])
    out = [model.features(b) for b in batches]
    assert not model.feed.pending and model.feed.pool is None  # drained: its thread has stopped
    model.feed.depth = 0
    assert all(torch.equal(o, model.features(b)) for o, b in zip(out, batches, strict=True))
    assert torch.equal(surprise, model.features(x[[7]]))
    assert model.feed_stats()["images"] == 1 + 1 + 5 + 5 + 1


def test_progress_summary_and_cli_line(images, tmp_path, capsys):
    class Steps:
        steps, images = 0, 0

    meter = RunProgress("erm", Steps(), 1, 3, show=False, per_image=True, total_images=30)
    Steps.images = 30
    meter.timed_evaluation(lambda epoch: None, 1)
    meter.after_epoch(1)
    s = meter.summary()
    assert s["images"] == 30 and len(s["epoch_s"]) == 1
    assert summary_line("xrm", 3, {**s, "images": 8000}).startswith("xrm: 3 epochs, 8,000 images in ")
    code = main([
        "train", "--data", str(images), "--backbone", "tiny-cnn", "--method", "mat", "--epochs", "1",
        "--batch-size", "32", "--out", str(tmp_path / "run"), "--precision", "bf16", "--prefetch", "1",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "XRM phase 1: 1 epochs, 96 images in" in err and "\nmat: 1 epochs, 96 images in" in err
    rec = json.loads((tmp_path / "run" / "results.json").read_text())
    assert rec["spec"]["precision"] == "bf16" and rec["spec"]["prefetch"] == 1
    assert "decode_cache" not in rec["spec"]  # a default leaves the spec as it was (earlier sweeps resume)
    assert rec["throughput"]["mat"]["images"] == 96
    assert set(rec["throughput"]) == {"xrm", "mat"}


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--prefetch", "-1"], "argument --prefetch: -1 is out of range (0 to 64)"),
        (["--decode-cache", "ram"], "argument --decode-cache: invalid choice: 'ram'"),
    ],
)
def test_bad_speed_flags_are_one_line(images, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(images), "--method", "erm", "--out", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_precision_on_features_is_refused_before_work(small_noisy, tmp_path, capsys):
    path = small_noisy.save_npz(tmp_path / "d.npz")
    code = main(["train", "--data", str(path), "--method", "erm", "--out", str(tmp_path / "r"), "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code == 2 and "apply to end-to-end runs" in err and len(err.strip().splitlines()) == 1


def test_train_val_test_rows_are_all_decoded_once(images):
    ds = load_table(images)
    ds.load(ds.data.indices(TRAIN)[:2])
    decoded = ds.decoded()
    for split in (TRAIN, VAL, TEST):
        rows = ds.data.indices(split).numpy()
        assert torch.equal(decoded.gather(rows), ds.load_uint8(rows))


def test_feature_extraction_reads_each_image_once_without_a_cache(images, cache_dir):
    from memaware.experiments.features import frozen_features

    ds = load_table(images)
    data, _, dim = frozen_features(ds, SmallCNN, seed=0, batch_size=32)
    assert ds.decoded_images is None and ds.decode_cache == "auto" and not cache_dir.exists()
    ds.load([0])  # training afterwards still decodes once
    again, _, _ = frozen_features(ds, SmallCNN, seed=0, batch_size=32)
    assert torch.equal(data.x, again.x) and dim == 16


def test_augmentations_flip_and_crop(monkeypatch):
    from memaware.models import augment as aug

    x = torch.rand(64, 3, 6, 8)
    flipped = aug.augment_images(x, "flip", aug.batch_generator(0, 5))
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54  # about half, each image whole
    assert torch.equal(flipped, aug.augment_images(x, "flip", aug.batch_generator(0, 5)))  # a function of the seed
    assert not torch.equal(flipped, aug.augment_images(x, "flip", aug.batch_generator(0, 6)))
    boxes = aug.crop_boxes(10_000, torch.Generator().manual_seed(0))
    sx, sy, cx, cy = boxes.unbind(1)
    assert float((sx * sy).min()) >= 0.7 - 1e-6 and float(sx.max()) <= 1 and float(sy.max()) <= 1
    assert bool(((cx.abs() <= 1 - sx + 1e-6) & (cy.abs() <= 1 - sy + 1e-6)).all())  # crops stay inside
    monkeypatch.setattr(aug, "CROP_AREA", (1.0, 1.0))  # a crop of the whole image: the image itself, or its mirror
    monkeypatch.setattr(aug, "CROP_RATIO", (1.0, 1.0))
    out = aug.augment_images(x, "crop-flip", aug.batch_generator(0, 5))
    assert torch.allclose(out, flipped, atol=1e-6)
    assert out.shape == x.shape and aug.augment_images(x, "none", aug.batch_generator(0, 5)) is x


def test_augmented_training_keeps_its_draws_in_the_state_and_evaluates_plain(images):
    ds = load_table(images)
    cfg = TrainConfig(epochs=2, lr=1e-2, optimizer="adam", batch_size=32, seed=0, augment="crop-flip")
    run = fit(ds, "erm", cfg, backbone=SmallCNN)
    state = run.model.state_dict()
    assert state["augmentation._extra_state"] == {"batches": 2 * 3}  # one draw per training step
    x = ds.data.x[ds.data.indices(VAL)]
    assert torch.equal(run.predict_logits(x), run.predict_logits(x))  # evaluation draws nothing
    plain, _ = _fit(images)
    assert "augmentation._extra_state" not in plain.model.state_dict()  # no augmentation, no extra key
    with pytest.raises(ConfigError, match="augment must be one of none, flip, crop-flip, got 'rotate'"):
        TrainConfig(augment="rotate")


def test_augment_needs_images(small_noisy, tmp_path):
    with pytest.raises(ConfigError, match="augment apply to end-to-end runs"):
        fit(small_noisy, "erm", TrainConfig(epochs=1, augment="flip"))
    table = tmp_path / "texts.csv"
    rows = [f"t{i} word,{i % 2},{['train', 'val', 'test'][i % 3]}" for i in range(30)]
    table.write_text("text,y,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match="augment 'flip' applies to images"):
        fit(load_table(table), "erm", TrainConfig(epochs=1, augment="flip"), backbone="tiny-text")


def test_bench_e2e_runs_and_its_three_ways_agree(monkeypatch, tmp_path):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_e2e.py"
    spec = importlib.util.spec_from_file_location("bench_e2e", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_e2e", bench)
    spec.loader.exec_module(bench)
    # the thread count as it is: setting it back to >= 2 later would break MKL's batched solves (memaware.threads)
    threads = str(torch.get_num_threads())
    report = bench.main(
        ["--n-train", "64", "--epochs", "2", "--repeats", "1", "--threads", threads, "--json", str(tmp_path / "r.json")]
    )
    cpu = report["cpu"]
    assert cpu["same_test_logits_fp32"]  # decoding every batch, decode-once + prefetch, preloaded tensors
    assert set(cpu["images_per_s"]) == {"preloaded", "memaware_before", "memaware", "memaware_bf16",
                                        "plain_pytorch_loop"}  # fmt: skip
    assert cpu["step_parts_ms"]["decode_ms"] > 0 and json.loads((tmp_path / "r.json").read_text()) == report


def test_an_unwritable_cache_folder_is_one_line(images, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ds = load_table(images)
    ds.configure_decoding("disk", folder=blocker / "decoded")
    with pytest.raises(ConfigError, match=r"decoded-image cache .*: cannot write it .*--decode-cache memory"):
        ds.load([0])
