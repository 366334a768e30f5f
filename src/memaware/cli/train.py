"""Train one method on your data: an .npz of features (keys x, y, split, optional a) or a real dataset read from
its standard layout (--dataset NAME --data-dir DIR: the backbone is fine-tuned end to end). Writes
DIR/results.json (validation and test metrics of the checkpoint chosen on validation, and what every selection
criterion would have chosen) and DIR/model.pt (a state dict, load with torch.load(..., weights_only=True)).
The whole training state is checkpointed into DIR every 30 s (and when training ends); --resume continues an
interrupted run from it with the numbers of an uninterrupted one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.groups import named_group
from ..engine import SELECTIONS, TrainConfig
from ..engine.config import DECAY_RULES, HEAD_INITS, OPTIMIZERS, SCHEDULES
from ..errors import ConfigError
from ..methods import METHODS, classifiers, is_reference, method_class
from ..models.catalog import DEFAULT_MAX_LENGTH
from .common import (
    TABLE_HELP,
    add_common,
    add_speed_flags,
    add_table_flags,
    hidden_widths,
    in_data,
    in_dir,
    in_file,
    in_path,
    speed_options,
)
from .common import real_range as real

RESUME_HINT = "to resume, run the same command with --resume (it continues from the checkpoint in --out)"
DEFAULTS = TrainConfig()  # with --data the library's defaults are the command's (the paper's Setup 2.1 protocol)
# training settings whose default with --dataset is the recipe of the dataset's modality (sweep.hparams.recipe_defaults)
RECIPE_KEYS = (
    "epochs", "lr", "optimizer", "momentum", "weight_decay", "batch_size", "schedule", "warmup_fraction", "init",
    "clip_grad_norm", "head_dropout", "class_balanced",
)  # fmt: skip
RECIPE_HELP = "default: the recipe of the dataset's modality with --dataset (docs/optimisation.md), else {}"


def _method_name(text: str) -> str:
    """A registered classifier or a ``module:Class`` reference to the user's own ``Method`` subclass."""
    if is_reference(text) or text in classifiers():
        return text
    raise argparse.ArgumentTypeError(f"choose from {', '.join(classifiers())}, or give package.module:Class")


def _method_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, got '{text}'")
    return key.strip(), value.strip()


def _bool(text: str) -> bool:
    """'true'/'false' (also 1/0, yes/no) -> bool, for a method's true-or-false hyper-parameter flag."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"true or false, got '{text}'")


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """One flag per hyper-parameter declared by a registered method (``Method.hparams``), defaulting to None so
    that the method's own declared default applies; ``--method-param`` covers any method, a user's included."""
    group = p.add_argument_group("method hyper-parameters (defaults: each method's declaration)")
    seen: dict[str, str] = {}
    for name in classifiers():
        for key, spec in METHODS[name].hparams.items():
            flag = spec.cli_flag(key)
            if flag in seen:
                continue
            seen[flag] = key
            kind = _bool if spec.kind is bool else spec.kind if spec.kind in (int, float, str) else str
            group.add_argument(
                flag, dest=f"hp_{key}", metavar=key.upper(), type=kind, choices=spec.choices, default=None,
                help=f"{spec.help} (default {spec.default}; {name})",
            )  # fmt: skip
    group.add_argument(
        "--method-param", action="append", type=_method_param, default=[], metavar="KEY=VALUE",
        help="a hyper-parameter of the method, any method (values parsed as JSON when they parse); repeatable",
    )  # fmt: skip


def method_hparams(args: argparse.Namespace) -> dict:
    """The hyper-parameters given for ``args.method``: its declared flags that were set, then --method-param."""
    cls = method_class(args.method)
    out = {k: getattr(args, f"hp_{k}") for k in cls.hparams if getattr(args, f"hp_{k}", None) is not None}
    for key, raw in args.method_param:
        if key not in cls.hparams:
            known = ", ".join(cls.hparams) or "none"
            raise ConfigError(f"--method-param {key}: method '{args.method}' has no such hyper-parameter ({known})")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    for key, value in out.items():
        cls.hparams[key].check(args.method, key, value)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (one of --data or --dataset)")
    src.add_argument(
        "--data", type=in_data,
        help=".npz file with x (n, d), y (n,), split (n,) and optional a (n,); or your own data as a table (.csv) or "
        "ImageFolder tree, trained end to end with --backbone (" + TABLE_HELP.partition(": ")[2] + ")",
    )  # fmt: skip
    src.add_argument(
        "--dataset",
        help="real dataset read from --data-dir: waterbirds, celeba, multinli, civilcomments, fashionbirds (renders)",
    )
    src.add_argument("--data-dir", type=in_dir, help="folder holding the dataset (its metadata CSV and files)")
    src.add_argument(
        "--backbone",
        help="backbone fine-tuned end to end with --dataset or a table: resnet50, efficientnet-lite0, bert, tiny-cnn, "
        "tiny-text, or your own network as package.module:name or file.py:name (a class or a function that, called "
        "with no argument, returns an nn.Module mapping a batch of images (b, 3, H, W) or a list of b strings to "
        "(b, d) features; memaware adds the heads; built under --seed) (default: the tiny one matching the data)",
    )
    src.add_argument(
        "--weights", type=in_path, help="local backbone weights (resnet50: a .pth file; bert: a directory)"
    )
    add_table_flags(src)
    add_speed_flags(p.add_argument_group("end-to-end speed (a backbone on a table or --dataset)"))
    p.add_argument(
        "--method", required=True, type=_method_name,
        help=f"training method: {', '.join(classifiers())}, or package.module:Class for your own Method subclass",
    )  # fmt: skip
    add_common(p)
    p.add_argument(
        "--epochs", type=int, default=None,
        help="training epochs (MAT two-phase: per phase); " + RECIPE_HELP.format(DEFAULTS.epochs),
    )  # fmt: skip
    p.add_argument(
        "--max-steps", type=int, default=DEFAULTS.max_steps,
        help="stop after this many optimiser steps (0: run all --epochs)",
    )  # fmt: skip
    p.add_argument(
        "--lr", type=real(0, low_open=True), default=None, help="learning rate; " + RECIPE_HELP.format(DEFAULTS.lr)
    )
    p.add_argument(
        "--weight-decay", type=real(0), default=None,
        help="L2 weight decay (lambda in paper eq. 2); " + RECIPE_HELP.format(DEFAULTS.weight_decay),
    )  # fmt: skip
    p.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=None, help="optimiser; " + RECIPE_HELP.format(DEFAULTS.optimizer)
    )
    p.add_argument(
        "--momentum", type=real(0, 1, high_open=True), default=None,
        help="SGD momentum; " + RECIPE_HELP.format(DEFAULTS.momentum),
    )
    p.add_argument(
        "--batch-size", type=int, default=None,
        help="mini-batch size, 0 = full batch; " + RECIPE_HELP.format(DEFAULTS.batch_size),
    )  # fmt: skip
    p.add_argument(
        "--class-balanced",
        action="store_true",
        default=None,
        help="draw mini-batches with every class equally likely (the authors do on CivilComments; default: on for "
        "CivilComments with --dataset)",
    )
    p.add_argument(
        "--init", choices=HEAD_INITS, default=None,
        help="the output heads' first weights: default = torch's nn.Linear rule from --seed, zeros = all zero (the "
        "authors' Table-1 code); " + RECIPE_HELP.format(DEFAULTS.init),
    )  # fmt: skip
    p.add_argument("--hidden", type=hidden_widths, default=(), help="MLP hidden widths, e.g. 256,256 (default: linear)")
    p.add_argument("--bias", action="store_true", help="give the output heads a bias (the paper's model has none)")
    tune = p.add_argument_group("end-to-end fine-tuning (--dataset: torch.optim with decay groups)")
    tune.add_argument(
        "--schedule", choices=SCHEDULES, default=None,
        help="learning-rate schedule over the run's steps: linear/cosine warm-up then decay; xrm = the authors' BERT "
        "schedule; " + RECIPE_HELP.format(DEFAULTS.schedule),
    )  # fmt: skip
    tune.add_argument(
        "--warmup-fraction", type=real(0, 1), default=None,
        help="share of the steps spent warming up (linear, cosine); " + RECIPE_HELP.format(DEFAULTS.warmup_fraction),
    )  # fmt: skip
    tune.add_argument(
        "--clip-grad-norm", type=real(0), default=None,
        help="rescale each step's gradient to at most this L2 norm (0: no clipping); "
        + RECIPE_HELP.format(DEFAULTS.clip_grad_norm),
    )  # fmt: skip
    tune.add_argument(
        "--head-dropout", type=real(0, 1, high_open=True), default=None,
        help="dropout on the backbone's features before the heads, in training; "
        + RECIPE_HELP.format(DEFAULTS.head_dropout),
    )  # fmt: skip
    tune.add_argument(
        "--max-length", type=int, default=DEFAULT_MAX_LENGTH,
        help="bert: tokens kept per raw text (the authors cut CivilComments at 220)",
    )  # fmt: skip
    tune.add_argument(
        "--decay-rule", choices=DECAY_RULES, default=DEFAULTS.decay_rule,
        help="standard = decay weights, not biases or normalisation layers (BERT recipe); authors = their inverted "
        "grouping",
    )  # fmt: skip
    add_method_flags(p)
    p.add_argument(
        "--selection",
        default="auto",
        help=f"checkpoint criterion on validation: {', '.join(SELECTIONS)}, or a criterion registered with "
        "memaware.selection (package.module:Class); auto = worst-group accuracy with true groups when computable, "
        "else with XRM-inferred groups (every criterion is reported anyway, and any can be applied later)",
    )
    p.add_argument(
        "--inferred-groups",
        type=in_file,
        help="inferred_groups.npz of an XRM/MAT run on the same data: gives methods that infer no groups "
        "the val_gi_wga criterion",
    )
    p.add_argument(
        "--eval-every", type=int, default=DEFAULTS.eval_every, help="evaluate on validation every N epochs"
    )
    p.add_argument(
        "--eval-every-steps", type=int, default=DEFAULTS.eval_every_steps, metavar="STEPS",
        help="evaluate every STEPS optimiser steps (mid-epoch too) and at the end instead of every --eval-every "
        "epochs; the authors evaluate every 50 steps (0: by epochs)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--resume", action="store_true",
        help="continue the unfinished run in --out from its checkpoint (on the same data and settings only; a "
        "finished one is reported as it is)",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true",
        help="start over in an --out that holds another run: memaware's files there are removed (once every input "
        "has been checked), your own files never",
    )  # fmt: skip


def training_settings(args: argparse.Namespace) -> dict:
    """``RECIPE_KEYS`` as given, else with --dataset the recipe of its modality (image: SGD with momentum 0.9;
    text: AdamW, linear warm-up and decay, clipping, dropout before the heads; both: heads at zero), else the
    library's defaults (``TrainConfig``)."""
    from ..data.datasets import MODALITIES, is_table_path
    from ..data.datasets.table import table_modality
    from ..sweep.hparams import recipe_defaults

    base = {k: getattr(DEFAULTS, k) for k in RECIPE_KEYS}
    if args.dataset in MODALITIES:  # an unknown name is refused when the dataset is opened
        base.update(recipe_defaults(MODALITIES[args.dataset], args.dataset))
    elif args.data is not None and is_table_path(args.data):  # a user's table: the recipe of its modality
        base.update(recipe_defaults(table_modality(args.data)))
    return {k: getattr(args, k) if getattr(args, k) is not None else base[k] for k in RECIPE_KEYS}


def run(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.dataset is None):
        raise ConfigError("give exactly one of --data FILE.npz and --dataset NAME (with --data-dir)")
    check_data_flags(args)
    hparams = {
        **training_settings(args),
        "max_steps": args.max_steps,
        "eval_every": args.eval_every,
        "eval_every_steps": args.eval_every_steps,
        "hidden": list(args.hidden),
        "bias": args.bias,
        "decay_rule": args.decay_rule,
        **method_hparams(args),
    }
    spec = {
        "method": args.method,
        "data": args.data,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "backbone": args.backbone,
        "weights": args.weights,
        "image_size": args.image_size,
        "image_root": args.image_root,
        "resize": args.resize,
        "normalize": args.normalize,
        "max_length": args.max_length,
        "seed": args.seed,
        "hparams": hparams,
        "selection": args.selection,
        "device": args.device,
        "inferred_groups": args.inferred_groups,
        "save_model": True,
        **speed_options(args),
    }
    from ..experiments.train import run_training  # torch: only once the arguments are known to be good

    out = Path(args.out)
    res = run_training(spec, out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if not args.quiet:
        print(summary(res, out))
    return 0


def check_data_flags(args: argparse.Namespace) -> None:
    """Refuses flags that do not apply to the data given (one line, before any work)."""
    from ..data.datasets import is_table_path

    table = args.data is not None and is_table_path(args.data)
    if args.data is not None and not table:
        given = [f for f, v in (("--backbone", args.backbone), ("--weights", args.weights),
                                ("--image-size", args.image_size), ("--image-root", args.image_root),
                                ("--normalize", args.normalize)) if v is not None]  # fmt: skip
        if given:
            raise ConfigError(f"{given[0]} applies to a table (.csv) or --dataset; {args.data} is an .npz of features")
    if args.dataset is not None and (args.image_root or args.normalize):
        raise ConfigError("--image-root and --normalize apply to a table given as --data, not to --dataset")
    if table and args.hidden:
        raise ConfigError("--hidden shapes the head on .npz features; with a table, put hidden layers in --backbone")


def summary(res: dict, out: Path) -> str:
    resumed = f", resumed from epoch {res['resumed_from']}" if res.get("resumed_from") else ""
    lines = [
        f"{res['method']}: checkpoint of epoch {res['selected_epoch']} chosen by {res['selection']} "
        f"({res['seconds']:.1f} s{resumed}) -> {out}/results.json"
    ]
    hp = res.get("hparams", {})
    if res["data"].get("backbone"):  # end to end: which recipe trained it is worth a line
        lines.append(
            f"  trained {res['data']['backbone']} end to end: {hp.get('optimizer')} lr {hp.get('lr')}, "
            + (f"momentum {hp.get('momentum')}, " if hp.get("optimizer") == "sgd" else "")
            + f"weight decay {hp.get('weight_decay')}, batch {hp.get('batch_size')}, {hp.get('epochs')} epochs, "
            f"heads init {hp.get('init')} (flags override; defaults: the recipe of the data's modality)"
        )
    for split in ("val", "test"):
        m = res[split]
        lines.append(f"  {split:<5} avg acc {m['avg_acc']:.3f}   worst-group acc {m['worst_group_acc']:.3f}")
    worst = min(res["test"]["groups"].items(), key=lambda kv: kv[1]["acc"], default=None)
    if worst:
        name = named_group(worst[0], res["data"].get("label_names"), res["data"].get("attr_names"))
        lines.append(f"  worst test group: {name} (n={worst[1]['n']}, acc {worst[1]['acc']:.3f})")
    if res.get("criteria"):
        lines.append("  test metrics under each selection criterion:")
        for name, c in res["criteria"].items():
            t = c["test"]
            lines.append(
                f"    {name:<16} epoch {c['epoch']:>5}  avg {t['avg_acc']:.3f}  worst-group {t['worst_group_acc']:.3f}"
            )
    missing = res.get("criteria_not_computable") or []
    if missing:
        lines.append(f"  not computable for this run (so not reported): {', '.join(missing)}")
    for note in res["data"].get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
