"""Builds the Waterbirds-size features set of the fidelity check (BENCHMARKS.md, "Authors' initialisation"): no
download, a fixed seed, the same file every time.

Sizes and group proportions are Waterbirds' (Sagawa et al.'s split; group = (y, a), y = waterbird, a = water
background): train 3498 / 184 / 56 / 1057 (n = 4795), validation 467 / 466 / 133 / 133, test 2255 / 2255 / 642 / 642
for (landbird, land), (landbird, water), (waterbird, land), (waterbird, water). Dimension d = 2048, a ResNet-50's
pooled width.

Each row is x = m + c_y s(y) (1 + j z_1) u_y + c_a s(a) (1 + j z_2) u_a + sigma e, with s(v) = 2 v - 1, u_y and u_a two
orthonormal random directions, m a constant positive offset (pooled ReLU features have a mean far from zero: this is
where a head's initialisation matters), z_1, z_2 ~ N(0, 1) jitter and e ~ N(0, I_d) noise. The background (c_a) is a
stronger signal than the bird (c_y), so a head trained on the majority groups leans on it: ERM's worst group is a
minority one, as on Waterbirds.

    python benchmarks/build_fidelity_features.py --out /tmp/fidelity.npz [--authors-pt DIR/waterbirds/features.pt]

``--authors-pt`` also writes the same rows in the layout the authors' code reads for Waterbirds features
(``{"tr"|"va"|"te": {"x", "y", "m"}}``, a torch file), so both codes train on exactly the same numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

GROUPS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (y, a)
SIZES = {0: (3498, 184, 56, 1057), 1: (467, 466, 133, 133), 2: (2255, 2255, 642, 642)}  # split -> per group
DIM = 2048


def build(seed: int = 0, c_y: float = 1.0, c_a: float = 2.0, jitter: float = 0.5, sigma: float = 0.5,
          offset: float = 0.5) -> dict[str, np.ndarray]:  # fmt: skip
    """{"x" (n, 2048) float32, "y", "a", "split"} of the fidelity set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, 2)))
    u_y, u_a = basis[:, 0], basis[:, 1]
    ys, as_, splits = [], [], []
    for split, sizes in SIZES.items():
        for (y, a), n in zip(GROUPS, sizes, strict=True):
            ys.append(np.full(n, y))
            as_.append(np.full(n, a))
            splits.append(np.full(n, split))
    y, a, split = (np.concatenate(v).astype(np.int64) for v in (ys, as_, splits))
    n = len(y)
    z = rng.standard_normal((n, 2))
    x = (
        offset
        + (c_y * (2 * y - 1) * (1 + jitter * z[:, 0]))[:, None] * u_y
        + (c_a * (2 * a - 1) * (1 + jitter * z[:, 1]))[:, None] * u_a
        + sigma * rng.standard_normal((n, DIM))
    )
    return {"x": x.astype(np.float32), "y": y, "a": a, "split": split}


def write_authors_pt(arrays: dict[str, np.ndarray], path: Path) -> None:
    """The authors' Waterbirds features layout: {"tr"|"va"|"te": {"x" (n, d), "y" (n, 1), "m" (n, 1)}}."""
    import torch

    out = {}
    for code, name in ((0, "tr"), (1, "va"), (2, "te")):
        rows = arrays["split"] == code
        out[name] = {
            "x": torch.from_numpy(arrays["x"][rows]),
            "y": torch.from_numpy(arrays["y"][rows])[:, None],
            "m": torch.from_numpy(arrays["a"][rows])[:, None],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the .npz to write (x, y, a, split)")
    p.add_argument("--authors-pt", help="also write the same rows as the authors' features.pt here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    arrays = build(args.seed)
    np.savez(args.out, **arrays)
    if args.authors_pt:
        write_authors_pt(arrays, Path(args.authors_pt))
    counts = {s: np.bincount(2 * arrays["y"][arrays["split"] == s] + arrays["a"][arrays["split"] == s]).tolist()
              for s in SIZES}  # fmt: skip
    print(f"wrote {args.out}: x {arrays['x'].shape}, group sizes per split {counts}")


if __name__ == "__main__":
    main()
