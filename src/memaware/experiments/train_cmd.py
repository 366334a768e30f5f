"""Train one method on your data: an .npz of features (keys x, y, split, optional a) or a real dataset read from
its standard layout (--dataset NAME --data-dir DIR: the backbone is fine-tuned end to end). Writes
DIR/results.json (validation and test metrics of the checkpoint chosen on validation, and what every selection
criterion would have chosen) and DIR/model.pt (a state dict, load with torch.load(..., weights_only=True)).
A checkpoint in DIR is written every epoch; --resume continues an interrupted run from it."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..methods import METHODS
from ..runner import CHECKPOINTS, execute
from ..train import SELECTIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_common, hidden_widths

    src = p.add_argument_group("data (one of --data or --dataset)")
    src.add_argument("--data", help=".npz file with x (n, d), y (n,), split (n,) and optional a (n,)")
    src.add_argument("--dataset", help="real dataset read from --data-dir: waterbirds, celeba, multinli, civilcomments")
    src.add_argument("--data-dir", help="folder holding the dataset (its metadata CSV and files)")
    src.add_argument(
        "--backbone",
        help="backbone fine-tuned end to end with --dataset: resnet50, bert, tiny-cnn, tiny-text "
        "(default: the tiny one matching the dataset)",
    )
    src.add_argument("--weights", help="local backbone weights (resnet50: a .pth file; bert: a directory)")
    src.add_argument("--image-size", type=int, default=224, help="image side for image datasets")
    classifiers = sorted(name for name, cls in METHODS.items() if cls.task == "classification")
    p.add_argument("--method", required=True, choices=classifiers, help="training method")
    add_common(p)
    p.add_argument("--epochs", type=int, default=1000, help="training epochs (MAT two-phase: per phase)")
    p.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many optimiser steps (0: run all --epochs)"
    )
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (lambda in paper eq. 2)")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd", help="optimiser")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument(
        "--batch-size", type=int, help="mini-batch size; 0 = full batch (default: 0 with --data, 32 with --dataset)"
    )
    p.add_argument(
        "--class-balanced",
        action="store_true",
        help="draw mini-batches with every class equally likely (the authors do on CivilComments)",
    )
    p.add_argument("--hidden", type=hidden_widths, default=(), help="MLP hidden widths, e.g. 256,256 (default: linear)")
    p.add_argument("--bias", action="store_true", help="give the output heads a bias (the paper's model has none)")
    p.add_argument("--temperature", type=float, default=0.1, help="MAT temperature on held-out logits")
    p.add_argument(
        "--mat-mode",
        choices=("two-phase", "single-run"),
        default="two-phase",
        help="MAT form: XRM then MAT (authors' code), or three heads in one run (paper Appendix A)",
    )
    p.add_argument("--eta", type=float, default=0.01, help="GroupDRO step size of the group weights")
    p.add_argument("--jtt-epochs", type=int, default=1, help="JTT: epochs T of the error-finding ERM model")
    p.add_argument("--lambda-up", type=float, default=20.0, help="JTT: upweighting of the error set")
    p.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="auto",
        help="checkpoint criterion on validation; auto = worst-group accuracy with true groups if "
        "validation has attributes, else with XRM-inferred groups (every criterion is reported anyway)",
    )
    p.add_argument(
        "--inferred-groups",
        help="inferred_groups.npz of an XRM/MAT run on the same data: gives methods that infer no groups "
        "the val_gi_wga criterion",
    )
    p.add_argument("--eval-every", type=int, default=1, help="evaluate on validation every N epochs")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out if there is one")


METHOD_FLAGS = {
    "mat": lambda a: {"temperature": a.temperature, "mode": a.mat_mode},
    "groupdro": lambda a: {"eta": a.eta},
    "jtt": lambda a: {"T": a.jtt_epochs, "lambda_up": a.lambda_up},
}


def run(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.dataset is None):
        raise ConfigError("give exactly one of --data FILE.npz and --dataset NAME (with --data-dir)")
    out = Path(args.out)
    if not args.resume:  # a fresh run: stale state from an earlier run in --out must not leak in
        for name in (*CHECKPOINTS, "results.json"):
            (out / name).unlink(missing_ok=True)
    elif (out / "results.json").exists():
        shutil.move(out / "results.json", out / "results.previous.json")
    hparams = {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        # end to end, a full batch would push the whole dataset through the backbone at once
        "batch_size": args.batch_size if args.batch_size is not None else (32 if args.dataset else 0),
        "class_balanced": args.class_balanced,
        "eval_every": args.eval_every,
        "hidden": list(args.hidden),
        "bias": args.bias,
        **METHOD_FLAGS.get(args.method, lambda a: {})(args),
    }
    spec = {
        "method": args.method,
        "data": args.data,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "backbone": args.backbone,
        "weights": args.weights,
        "image_size": args.image_size,
        "seed": args.seed,
        "hparams": hparams,
        "selection": args.selection,
        "device": args.device,
        "inferred_groups": args.inferred_groups,
        "save_model": True,
    }
    res = execute(spec, out, progress=not args.quiet)
    if not args.quiet:
        print(summary(res, out))
    return 0


def summary(res: dict, out: Path) -> str:
    resumed = f", resumed from epoch {res['resumed_from']}" if res.get("resumed_from") else ""
    lines = [
        f"{res['method']}: checkpoint of epoch {res['selected_epoch']} chosen by {res['selection']} "
        f"({res['seconds']:.1f} s{resumed}) -> {out}/results.json"
    ]
    for split in ("val", "test"):
        m = res[split]
        lines.append(f"  {split:<5} avg acc {m['avg_acc']:.3f}   worst-group acc {m['worst_group_acc']:.3f}")
    worst = min(res["test"]["groups"].items(), key=lambda kv: kv[1]["acc"], default=None)
    if worst:
        lines.append(f"  worst test group: {worst[0]} (n={worst[1]['n']}, acc {worst[1]['acc']:.3f})")
    if res.get("criteria"):
        lines.append("  test metrics under each selection criterion:")
        for name, c in res["criteria"].items():
            t = c["test"]
            lines.append(
                f"    {name:<16} epoch {c['epoch']:>5}  avg {t['avg_acc']:.3f}  worst-group {t['worst_group_acc']:.3f}"
            )
    for note in res["data"].get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
