"""Train ERM, XRM or MAT on your own data (an .npz with keys x, y, split and optionally a) and write
DIR/results.json (validation and test metrics of the checkpoint chosen on validation) and DIR/model.pt
(a state dict, load with torch.load(..., weights_only=True))."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..artifacts import atomic_writer, write_json
from ..data import load_npz
from ..errors import ConfigError
from ..methods import METHODS
from ..train import SELECTIONS, TrainConfig, fit


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_common, hidden_widths

    p.add_argument(
        "--data", required=True, help=".npz file with x (n, d), y (n,), split (n,) and optional a (n,)"
    )
    classifiers = sorted(name for name, cls in METHODS.items() if cls.task == "classification")
    p.add_argument("--method", required=True, choices=classifiers, help="training method")
    add_common(p)
    p.add_argument("--epochs", type=int, default=1000, help="training epochs (MAT two-phase: per phase)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (lambda in paper eq. 2)")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd", help="optimiser")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--batch-size", type=int, default=0, help="mini-batch size; 0 = full batch")
    p.add_argument(
        "--hidden", type=hidden_widths, default=(), help="MLP hidden widths, e.g. 256,256 (default: linear)"
    )
    p.add_argument(
        "--bias", action="store_true", help="give the output heads a bias (the paper's model has none)"
    )
    p.add_argument("--temperature", type=float, default=0.1, help="MAT temperature on held-out logits")
    p.add_argument(
        "--mat-mode",
        choices=("two-phase", "single-run"),
        default="two-phase",
        help="MAT form: XRM then MAT (authors' code), or three heads in one run (paper Appendix A)",
    )
    p.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="auto",
        help="checkpoint criterion on validation; auto = worst-group accuracy with true groups if "
        "validation has attributes, else with XRM-inferred groups",
    )
    p.add_argument("--eval-every", type=int, default=1, help="evaluate on validation every N epochs")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def run(args: argparse.Namespace) -> int:
    data = load_npz(args.data)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    cfg = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seed=args.seed,
        selection=args.selection,
        eval_every=args.eval_every,
        device=args.device,
        progress=not args.quiet,
    )
    method_kwargs = {"temperature": args.temperature, "mode": args.mat_mode} if args.method == "mat" else {}
    t0 = time.perf_counter()
    result = fit(
        data, args.method, cfg, model_kwargs={"hidden": args.hidden, "bias": args.bias}, **method_kwargs
    )
    out = Path(args.out)
    res = {
        "method": args.method,
        "selection": result.selection,
        "selected_epoch": result.selected_epoch,
        "val": result.evaluate(data, "val"),
        "test": result.evaluate(data, "test"),
        "hparams": {
            "epochs": cfg.epochs,
            "lr": cfg.lr,
            "optimizer": cfg.optimizer,
            "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay,
            "batch_size": cfg.batch_size,
            "hidden": list(args.hidden),
            "bias": args.bias,
            "seed": cfg.seed,
            **result.method.describe(),
        },
        "data": {
            "path": str(args.data),
            "n": len(data),
            "dim": data.dim,
            "num_classes": data.num_classes,
            "num_attrs": data.num_attrs,
        },
        "seconds": time.perf_counter() - t0,
    }
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    atomic_writer(out / "model.pt", lambda p: torch.save(state, p), ".pt")
    write_json(out / "results.json", res)
    if not args.quiet:
        print(summary(res, out))
    return 0


def summary(res: dict, out: Path) -> str:
    lines = [
        f"{res['method']}: checkpoint of epoch {res['selected_epoch']} chosen by {res['selection']} "
        f"({res['seconds']:.1f} s) -> {out}/results.json"
    ]
    for split in ("val", "test"):
        m = res[split]
        lines.append(f"  {split:<5} avg acc {m['avg_acc']:.3f}   worst-group acc {m['worst_group_acc']:.3f}")
    worst = min(res["test"]["groups"].items(), key=lambda kv: kv[1]["acc"], default=None)
    if worst:
        lines.append(f"  worst test group: {worst[0]} (n={worst[1]['n']}, acc {worst[1]['acc']:.3f})")
    return "\n".join(lines)
