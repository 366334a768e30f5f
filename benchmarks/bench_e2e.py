"""End-to-end training speed: memaware's path (a user's network on a CSV image folder) against the same network on
tensors already in memory, where the time of one step goes, and the GPU check.

CPU (default): a user's 15k-parameter CNN (``SmallCNN`` below) on ``memaware synth-images`` PNGs (800 training,
300 validation, 300 test, 32 px), ERM, Adam lr 1e-3, batch 64, 10 epochs, run three ways back to back:
- ``preloaded``: memaware's engine on the same images already decoded into one float tensor (the limit);
- ``memaware before``: ``fit(..., backbone=SmallCNN)`` decoding every batch from disk in the step
  (``--decode-cache off``, ``--prefetch 0``: the path before decode-once and background loading);
- ``memaware``: the defaults (decoded once, uint8 in memory; two batches prepared ahead in the background).
Reports images/s in training (evaluations apart), the first epoch's seconds and the later epochs' median
(evaluation of validation and test every epoch included), best of ``--repeats``, the ratio to ``preloaded``
and whether the three end with the same test logits (they must: fp32, same seed, same engine). The plain
PyTorch loop (torch.optim.Adam) is reported for reference. Then one step's
parts on a batch of 64: decode (PIL), uint8 -> normalised float, host-to-device copy (CUDA only), forward+backward
+ optimiser, and an evaluation pass; and one epoch of steps fed by memaware's background thread or by a
``DataLoader`` with worker processes (the design choice of ``models.input_feed``).

``--fashionbirds``: EfficientNet-Lite0 (``vision-lite`` extra) on FashionBirds renders, before and after.

``--device cuda``: ResNet-50 (torchvision, random init, 224 px, batch 128) through memaware's ``EndToEndNet`` and
loader from synthetic in-memory uint8 images, fp32 and bf16, next to a float batch already on the GPU.

Usage: python benchmarks/bench_e2e.py [--epochs 10] [--threads 1] [--fashionbirds] [--device cuda] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """A user's network: (b, 3, 32, 32) -> (b, 32) features, 14,336 parameters."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BATCH, LR = 64, 1e-3


def write_images(folder: Path, n_train: int = 800) -> Path:
    from memaware.data.spurious_images import write_spurious_images

    n_eval = 300 if n_train >= 300 else max(8, n_train // 2)
    write_spurious_images(folder, n_train=n_train, n_val=n_eval, n_test=n_eval, seed=0)
    return folder / "metadata.csv"


def memaware_run(csv: Path, epochs: int, decode_cache: str, prefetch: int, precision: str = "fp32"):
    """(throughput dict, test logits) of ERM through ``fit`` with the given loading settings."""
    from memaware import load_table
    from memaware.data import TEST
    from memaware.engine import TrainConfig, fit

    ds = load_table(csv)
    ds.configure_decoding(decode_cache)
    cfg = TrainConfig(
        epochs=epochs, lr=LR, optimizer="adam", batch_size=BATCH, seed=0, eval_batch_size=128,
        prefetch=prefetch, precision=precision,
    )  # fmt: skip
    res = fit(ds, "erm", cfg, backbone=SmallCNN)
    test = ds.data.x[ds.data.indices(TEST)]
    return res.throughput, res.predict_logits(test)


def preloaded_run(csv: Path, epochs: int):
    """(throughput, test logits) of the same run through the same engine, on the images decoded beforehand into
    one float tensor (``GroupData.x``: the backbone takes x's rows as they are): the limit of loading."""
    import dataclasses

    from memaware import load_table
    from memaware.data import TEST
    from memaware.engine import TrainConfig, fit

    ds = load_table(csv)
    data = dataclasses.replace(ds.data, x=ds.load(np.arange(len(ds))))
    cfg = TrainConfig(
        epochs=epochs, lr=LR, optimizer="adam", batch_size=BATCH, seed=0, eval_batch_size=128
    )
    res = fit(data, "erm", cfg, backbone=SmallCNN)
    return res.throughput, res.predict_logits(data.x[data.indices(TEST)])


def plain_loop_run(csv: Path, epochs: int) -> dict:
    """The same network in the plain PyTorch loop a paper codebase writes (torch.optim.Adam, images in memory)."""
    from memaware import load_table
    from memaware.data import TRAIN

    ds = load_table(csv)
    rows = ds.data.indices(TRAIN)
    x, y = ds.load(rows), ds.data.y[rows]
    torch.manual_seed(0)
    net = nn.Sequential(SmallCNN(), nn.Linear(32, 2, bias=False))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    epoch_s = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for pos in torch.randperm(len(y), generator=gen).split(BATCH):
            loss = nn.functional.cross_entropy(net(x[pos]), y[pos])
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t0)
    return {"images": len(y) * epochs, "seconds": sum(epoch_s), "images_per_s": len(y) * epochs / sum(epoch_s),
            "epoch_s": epoch_s}  # fmt: skip


def step_parts(csv: Path, device: str) -> dict:
    """Milliseconds of one batch of 64's parts."""
    from PIL import Image

    from memaware import load_table
    from memaware.data import TRAIN, VAL
    from memaware.data.datasets.decoded import normalize_images
    from memaware.models import all_logits
    from memaware.models.backbone_source import end_to_end_factory

    ds = load_table(csv)
    rows = ds.data.indices(TRAIN)[:BATCH].numpy()

    def timed(fn, repeats: int = 5) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / repeats * 1e3

    def decode() -> None:
        for r in rows:
            with Image.open(ds.image_dir / ds.files[r]) as img:
                img.convert("RGB").load()

    u8 = ds.load_uint8(rows)
    parts = {"decode_ms": timed(decode), "to_float_ms": timed(lambda: normalize_images(u8, ds.normalize))}
    if device.startswith("cuda"):
        pinned = u8.pin_memory()
        parts["host_to_device_ms"] = timed(lambda: pinned.to(device, non_blocking=True))
    model = end_to_end_factory(ds, SmallCNN, seed=0, device=device)(1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    xb, yb = ds.data.x[rows].to(device), ds.data.y[rows].to(device)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(xb)[:, 0], yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    parts["forward_backward_step_ms"] = timed(step)
    val = ds.data.x[ds.data.indices(VAL)]
    parts["evaluation_ms_per_64"] = timed(lambda: all_logits(model, val, 128, device), 2) * BATCH / len(val)
    return {k: round(v, 2) for k, v in parts.items()}


class BatchesOf:
    """A map-style dataset of whole batches (``DataLoader(batch_size=None)``), for the worker-process comparison."""

    def __init__(self, ds, batches: list[np.ndarray], uint8: bool):
        self.ds, self.batches, self.uint8 = ds, batches, uint8

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ds.load_uint8(self.batches[i]) if self.uint8 else self.ds.load(self.batches[i])


def loaders_report(csv: Path, epochs: int = 3) -> dict:
    """Seconds per epoch (best of ``epochs``) of the CNN's training steps fed by memaware's background thread
    (``InputFeed``, 0 or 2 batches ahead) or by a ``DataLoader`` with 1 or 2 persistent worker processes, from the
    decoded uint8 array and decoding every batch from its files."""
    from torch.utils.data import DataLoader

    from memaware import load_table
    from memaware.data import TRAIN
    from memaware.models.input_feed import InputFeed

    ds = load_table(csv)
    rows = ds.data.indices(TRAIN).numpy()
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    net = SmallCNN()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def step(x: torch.Tensor) -> None:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {}
    for cache in ("auto", "off"):
        ds.configure_decoding(cache)
        ds.load([0])
        for depth in (0, 2):
            feed, best = InputFeed(ds, depth), float("inf")
            for _ in range(epochs):
                t0 = time.perf_counter()
                feed.expect(batches)
                for r in batches:
                    step(feed.host_batch(r))
                best = min(best, time.perf_counter() - t0)
            out[f"decode_{cache}_thread_ahead_{depth}"] = round(best, 3)
        for workers in (1, 2):
            loader = DataLoader(
                BatchesOf(ds, batches, cache != "off"), batch_size=None, num_workers=workers, persistent_workers=True
            )
            best = float("inf")
            for _ in range(epochs):
                t0 = time.perf_counter()
                for x in loader:
                    step(x)
                best = min(best, time.perf_counter() - t0)
            out[f"decode_{cache}_dataloader_{workers}_workers"] = round(best, 3)
            del loader
    return out


def cpu_report(args: argparse.Namespace) -> dict:
    """Each way run ``repeats`` times, interleaved (a shared machine drifts); the best of them is reported (as
    timeit does: other processes only ever slow a run down)."""
    runs: dict[str, list[dict]] = {k: [] for k in ("preloaded", "memaware_before", "memaware", "memaware_bf16")}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MEMAWARE_CACHE_DIR", str(Path(tmp) / "cache"))
        csv = write_images(Path(tmp) / "images", args.n_train)
        for _ in range(args.repeats):
            pre, logits_pre = preloaded_run(csv, args.epochs)
            before, logits_before = memaware_run(csv, args.epochs, "off", 0)
            after, logits_after = memaware_run(csv, args.epochs, "auto", 2)
            bf16, logits_bf16 = memaware_run(csv, args.epochs, "auto", 2, "bf16")
            for k, v in zip(runs, (pre, before, after, bf16), strict=True):
                runs[k].append(v)
        plain = plain_loop_run(csv, args.epochs)
        parts = step_parts(csv, "cpu")
        loaders = loaders_report(csv)
    rate = {k: float(np.max([r["images_per_s"] for r in v])) for k, v in runs.items()}
    first = {k: float(np.min([r["epoch_s"][0] for r in v])) for k, v in runs.items()}
    later = {k: float(np.min([np.median(r["epoch_s"][1:]) for r in v])) for k, v in runs.items()}
    return {
        "images_per_s": {
            **{k: round(v, 1) for k, v in rate.items()}, "plain_pytorch_loop": round(plain["images_per_s"], 1)
        },
        "first_epoch_s": {k: round(v, 3) for k, v in first.items()},
        "later_epochs_s": {k: round(v, 3) for k, v in later.items()},
        "ratio_to_preloaded": round(rate["memaware"] / rate["preloaded"], 3),
        "ratio_before_to_preloaded": round(rate["memaware_before"] / rate["preloaded"], 3),
        "later_epochs_speedup": round(later["memaware_before"] / later["memaware"], 2),
        "same_test_logits_fp32": bool(
            torch.equal(logits_before, logits_after) and torch.equal(logits_pre, logits_after)
        ),
        "bf16_max_abs_logit_diff": round(float((logits_bf16 - logits_after).abs().max()), 4),
        "step_parts_ms": parts,
        "loaders_epoch_s": loaders,
        "runs": runs,
    }  # fmt: skip


def fashionbirds_report(steps: int = 12, repeats: int = 2) -> dict:
    """EfficientNet-Lite0 fine-tuned on FashionBirds renders (160 px, batch 32, ``steps`` SGD steps), rendering
    in the step (``prefetch=0``, as before) or in the background; best of ``repeats``, interleaved."""
    from memaware.data.benchmarks.fashionbirds_render import open_fashionbirds_images
    from memaware.engine import TrainConfig, fit

    ds = open_fashionbirds_images(image_size=160, scale=0.1)
    out: dict[str, dict] = {}
    for _ in range(repeats):
        for name, prefetch in (("before", 0), ("memaware", 2)):
            cfg = TrainConfig(
                epochs=1, max_steps=steps, lr=1e-3, optimizer="sgd", momentum=0.9, batch_size=32, seed=0,
                selection="last", prefetch=prefetch,
            )  # fmt: skip
            t = fit(ds, "erm", cfg, backbone="efficientnet-lite0").throughput
            if name not in out or t["images_per_s"] > out[name]["images_per_s"]:
                out[name] = t
    return out


class SyntheticImages:
    """n random (3, S, S) uint8 images in memory with a dataset's interface (``load_uint8`` / ``load``)."""

    modality, normalize, decode_cache = "image", "imagenet", "memory"

    def __init__(self, n: int, side: int):
        from memaware.data import GroupData

        rng = np.random.default_rng(0)
        self.images = torch.from_numpy(rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8))
        x = np.arange(n, dtype=np.float32)[:, None]
        split = np.zeros(n, dtype=np.int64)
        split[-n // 8 :] = 1
        split[-n // 16 :] = 2
        self.data = GroupData.from_arrays(x, rng.integers(0, 2, n), split, rng.integers(0, 2, n), num_classes=2)

    def load_uint8(self, rows) -> torch.Tensor:
        return self.images[torch.as_tensor(np.asarray(rows))]

    def load(self, rows) -> torch.Tensor:
        from memaware.data.datasets.decoded import normalize_images

        return normalize_images(self.load_uint8(rows), self.normalize)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cuda_report(device: str, steps: int = 30, batch: int = 128, side: int = 224) -> dict:
    """ResNet-50 images/s (``device`` may be cpu for a smoke run of this function at a small size)."""
    import torchvision

    from memaware.data import TRAIN
    from memaware.models.backbones import EndToEndNet

    ds = SyntheticImages(max(4096, 2 * steps * batch), side)
    rows = ds.data.indices(TRAIN)
    out = {"device": torch.cuda.get_device_name(device) if device.startswith("cuda") else device}
    for precision in ("fp32", "bf16"):
        net = torchvision.models.resnet50(weights=None)
        net.fc = nn.Identity()
        model = EndToEndNet(ds, net, 2048, 2, seed=0).to(device)
        model.configure(precision, channels_last=device.startswith("cuda"), prefetch=2)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        batches = [rows[i * batch : (i + 1) * batch] for i in range(steps)]
        xs = [ds.data.x[b] for b in batches]
        model.prefetch(xs)
        for i, xb in enumerate(xs):
            if i == 5:  # warm-up: cuDNN autotuning, allocator
                synchronize(device)
                t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(model(xb.to(device))[:, 0], ds.data.y[batches[i]].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        synchronize(device)
        out[f"memaware_{precision}_images_per_s"] = round((steps - 5) * batch / (time.perf_counter() - t0), 1)
        # the same network on a float batch already on the GPU: the limit
        x = ds.load(batches[0]).to(device).contiguous(memory_format=torch.channels_last)
        y = ds.data.y[batches[0]].to(device)
        for i in range(steps):
            if i == 5:
                synchronize(device)
                t0 = time.perf_counter()
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                feats = model.backbone(x)
            loss = nn.functional.cross_entropy(model.heads(feats.float())[:, 0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        synchronize(device)
        out[f"in_memory_{precision}_images_per_s"] = round((steps - 5) * batch / (time.perf_counter() - t0), 1)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-train", type=int, default=800, help="training images (300 validation, 300 test)")
    p.add_argument("--repeats", type=int, default=3, help="each way this many times, interleaved (best of them)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--fashionbirds", action="store_true", help="also EfficientNet-Lite0 on FashionBirds renders")
    p.add_argument("--device", default="cpu", help="cpu (the CNN on a CSV folder) or cuda (ResNet-50, 224 px)")
    p.add_argument("--json", help="write the report here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: CUDA is not available on this machine")
        report = {"cuda": cuda_report(args.device)}
    else:
        report = {"cpu": cpu_report(args)}
        if args.fashionbirds:
            report["fashionbirds_efficientnet_lite0"] = fashionbirds_report()
    report["threads"] = args.threads
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
