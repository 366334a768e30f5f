"""MAT in one run with ``memaware.MATSingleRun``, on the problem of ``own_loop_pytorch.py`` (same data and CNN).

One CNN backbone and three linear heads: A and B are XRM's twins on the backbone's detached features, C takes MAT's
shifted loss and trains the backbone; predictions come from C. Prints the test worst-group accuracy beside ERM's.

Run:  python examples/own_loop_single_run.py [--n 800] [--epochs 15] [--seed 0] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from own_loop_pytorch import SIZE, IndexedImages, SmallCNN, group_accuracies, make_images, train
from torch import nn
from torch.utils.data import DataLoader

from memaware import MATSingleRun


def backbone() -> nn.Module:
    """SmallCNN without its read-out: (b, 3, 16, 16) -> (b, 512) features."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=800)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (see own_loop_pytorch.py)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_tr, y_tr, _ = make_images(args.n, agree=0.9, seed=args.seed)
    x_te, y_te, c_te = make_images(2000, agree=0.5, seed=args.seed + 2)
    train_set = IndexedImages(x_tr, y_tr)

    def shuffled() -> DataLoader:
        return DataLoader(train_set, 64, shuffle=True, generator=torch.Generator().manual_seed(args.seed))

    erm = SmallCNN()
    train(erm, lambda x, y, idx: F.cross_entropy(erm(x), y), shuffled(), args.epochs, args.lr)

    model = MATSingleRun(backbone(), 32 * (SIZE // 4) ** 2, num_classes=2, num_train=args.n, seed=args.seed)
    train(model, model.loss, shuffled(), args.epochs, args.lr)

    groups = y_te * 2 + c_te
    out = {"args": vars(args)}
    for name, m in (("erm", erm), ("mat_single_run", model)):
        accs = group_accuracies(m, x_te, y_te, groups)
        out[name] = {"test_worst_group": min(accs), "test_group_acc": accs}
        print(f"{name:15s} test worst-group {min(accs):.3f}   per group (class, tint) "
              + " ".join(f"{a:.2f}" for a in accs))  # fmt: skip
    out["seconds"] = time.perf_counter() - t0
    print(f"{out['seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
