"""MAT in a plain PyTorch training loop: ERM, then XRM twins -> held-out logits -> MAT, on a small spurious problem.

The problem (generated in memory): 16x16 RGB images of one of two glyphs, a ring (class 0) or a cross (class 1),
drawn faintly in grey on a background tinted red or green, plus strong per-pixel noise. In training the tint
agrees with the class 90 % of the time; at test it is independent of it. A small CNN trained with cross-entropy
(ERM) learns the tint, which is easy, and fits the 10 % of disagreeing training images by memorizing their noise:
it fails on the test images whose tint disagrees with their class. MAT trains the same CNN with a loss shifted by
what a model that never saw each image predicts for it (XRM's held-out twin), so the tint buys nothing and the
glyph must be learnt. Groups = (class, tint); the score is the worst group's test accuracy.

Run:  python examples/own_loop_pytorch.py [--n 800] [--epochs 15] [--seed 0] [--json results.json]
Nothing of memaware's trainer is used: only ``memaware.XRMTwins`` and ``memaware.MATLoss``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from memaware import MATLoss, XRMTwins

SIZE = 16


# ---- data --------------------------------------------------------------------------------------------------------
def glyphs() -> torch.Tensor:
    """(2, SIZE, SIZE) 0/1 masks: a ring (class 0) and a cross (class 1)."""
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    c = (SIZE - 1) / 2
    r = ((yy - c) ** 2 + (xx - c) ** 2).sqrt()
    ring = (r > 3.5) & (r < 5.5)
    cross = (((yy - xx).abs() < 1) | ((yy + xx - 2 * c).abs() < 1)) & (r < 6.5)
    return torch.stack([ring, cross]).float()


def make_images(
    n: int, agree: float, seed: int, glyph: float = 0.2, tint: float = 0.5, noise: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (n, 3, SIZE, SIZE), y (n,) class, colour (n,): 0 = red tint, 1 = green; colour == y with prob ``agree``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    colour = torch.where(torch.rand(n, generator=g) < agree, y, 1 - y)
    x = noise * torch.randn(n, 3, SIZE, SIZE, generator=g)  # per-image noise: what a network can memorize
    x[torch.arange(n), colour] += tint  # the spurious feature: channel 0 (red) or 1 (green)
    x += glyph * glyphs()[y].unsqueeze(1)  # the core feature, in all three channels
    return x, y, colour


class IndexedImages(Dataset):
    """Yields (x, y, idx): idx is the example's position in this dataset, the key of XRM's and MAT's state."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i], self.y[i], i


# ---- model, training, evaluation ------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """(b, 3, 16, 16) -> (b, 2) logits: two conv blocks and a linear read-out of the whole feature map."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * (SIZE // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def train(module: nn.Module, loss_fn, loader: DataLoader, epochs: int, lr: float) -> None:
    """The one loop every stage uses: loss_fn(x, y, idx) -> scalar; Adam over ``module.parameters()``."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        for x, y, idx in loader:
            loss = loss_fn(x, y, idx)
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def group_accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> list[float]:
    """Accuracy in each group present (groups (n,) ids), ordered by id."""
    model.eval()
    hit = (model(x).argmax(dim=1) == y).float()
    return [float(hit[groups == g].mean()) for g in groups.unique()]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=800, help="training images (default 800)")
    p.add_argument("--epochs", type=int, default=15, help="epochs of each stage: ERM, XRM, MAT (default 15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.1, help="MAT's temperature (memaware's default 0.1)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: these small convolutions "
                   "gain little from more, and lose much when the cores are shared)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the CNNs' initial weights

    x_tr, y_tr, c_tr = make_images(args.n, agree=0.9, seed=args.seed)
    x_va, y_va, c_va = make_images(1000, agree=0.5, seed=args.seed + 1)
    x_te, y_te, c_te = make_images(2000, agree=0.5, seed=args.seed + 2)
    train_set = IndexedImages(x_tr, y_tr)

    def shuffled() -> DataLoader:
        return DataLoader(train_set, 64, shuffle=True, generator=torch.Generator().manual_seed(args.seed))

    # 1. ERM: plain cross-entropy
    erm = SmallCNN()
    train(erm, lambda x, y, idx: F.cross_entropy(erm(x), y), shuffled(), args.epochs, args.lr)

    # 2. XRM: two twins, each on half the training set, with label flipping; then held-out logits for every image
    twins = XRMTwins(SmallCNN, num_train=args.n, num_classes=2, seed=args.seed)
    train(twins, twins.loss, shuffled(), args.epochs, args.lr)
    heldout = twins.heldout_logits_all(DataLoader(train_set, 256))  # (n, 2), row i = image i

    # 3. MAT: the same CNN and loop, with eq. 7's shifted cross-entropy; predictions use mat(x) alone
    mat = SmallCNN()
    mat_loss = MATLoss(heldout, y_tr, temperature=args.temperature)
    train(mat, lambda x, y, idx: mat_loss(mat(x), y, idx), shuffled(), args.epochs, args.lr)

    # groups (class, tint) on test; on validation also XRM's inferred groups, usable when tints are unknown
    test_groups, inferred = y_te * 2 + c_te, twins.infer_groups(x_va, y_va)
    out: dict = {"args": vars(args)}
    for name, model in (("erm", erm), ("mat", mat)):
        accs = group_accuracies(model, x_te, y_te, test_groups)
        out[name] = {
            "test_worst_group": min(accs),
            "test_group_acc": accs,
            "val_worst_group": min(group_accuracies(model, x_va, y_va, y_va * 2 + c_va)),
            "val_worst_inferred_group": min(group_accuracies(model, x_va, y_va, inferred)),
        }
    out["xrm"] = {
        "flipped_fraction": twins.flipped_fraction(),
        "heldout_predicts_tint": float((heldout.argmax(dim=1) == c_tr).float().mean()),
    }
    out["seconds"] = time.perf_counter() - t0
    for name in ("erm", "mat"):
        r = out[name]
        print(f"{name.upper():4s} test worst-group {r['test_worst_group']:.3f}   per group (class, tint) "
              + " ".join(f"{a:.2f}" for a in r["test_group_acc"]))  # fmt: skip
    print(f"XRM held-out twin predicts the tint on {out['xrm']['heldout_predicts_tint']:.0%} of training images; "
          f"{out['seconds']:.1f} s")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
