"""FashionBirds feature extraction speed: rendering, the network eager vs frozen, and the whole overlapped pipeline.

Usage: python benchmarks/bench_features.py [--n 7195] [--check 256] [--eager N]

- ``render``: the 160 px scenes alone (``FashionBirdsImages.load``), images/s;
- ``eager``: EfficientNet-Lite0 as before this benchmark's change (eager, contiguous, 32 images a pass) on the
  first ``--eager`` rendered images;
- ``pipeline``: what ``memaware prepare`` / ``reproduce`` now run (``fashionbirds_features.embed_rows``: the next
  batch rendered in a thread while the network, compiled by ``--engine``, embeds the current one) on the first ``--n``
  rows of the hard pair (7,195 = its three splits), wall clock including the one-off trace;
- ``max abs diff``: pipeline features vs eager ones on the first ``--check`` rows (must stay below 1e-4).
Prints one line per measurement; results are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from memaware.data.benchmarks.fashionbirds_features import embed_rows
from memaware.data.benchmarks.fashionbirds_render import open_fashionbirds_images
from memaware.models.efficientnet import make_efficientnet_lite0
from memaware.models.inference import ENGINES, inference_engine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=7195, help="rows of the hard pair to embed with the pipeline")
    p.add_argument("--eager", type=int, default=512, help="rows to embed with the eager network (0: skip)")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="the pipeline's inference engine")
    p.add_argument("--check", type=int, default=256, help="rows compared between eager and the pipeline")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)
    ds = open_fashionbirds_images(seed=0, pair="hard")
    rows = np.arange(min(args.n, len(ds)))

    t = time.perf_counter()
    for start in range(0, 1024, 64):
        ds.load(rows[start : start + 64])
    print(f"render: {1024 / (time.perf_counter() - t):.0f} images/s (1024 scenes, 64 a batch)", flush=True)

    net, _ = make_efficientnet_lite0()
    net.eval()
    check = rows[: args.check]
    with torch.no_grad():
        reference = torch.cat([net(ds.load(check[i : i + 32])) for i in range(0, len(check), 32)]).numpy()
        if args.eager:
            eager_rows = rows[: args.eager]
            images = [ds.load(eager_rows[i : i + 32]) for i in range(0, len(eager_rows), 32)]
            t = time.perf_counter()
            for batch in images:
                net(batch)
            print(f"eager network: {len(eager_rows) / (time.perf_counter() - t):.0f} images/s "
                  f"({len(eager_rows)} pre-rendered images, 32 a pass)", flush=True)  # fmt: skip

    embed = inference_engine(net, args.engine)
    t = time.perf_counter()
    feats = embed_rows(ds, rows, embed)
    seconds = time.perf_counter() - t
    print(f"pipeline: {len(rows)} images in {seconds:.1f} s = {len(rows) / seconds:.0f} images/s "
          f"(render + {embed.name} network, overlapped, compilation included)", flush=True)  # fmt: skip
    diff = float(np.abs(feats[: len(check)] - reference).max())
    print(f"max abs diff vs eager on {len(check)} rows: {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
