"""Memorization audit (paper Appendix B.2, Fig. 2): per-example memorization scores of the training split
(eq. 8 with j = i) for ERM and MAT, summarised per group (y, a). Writes DIR/scores.npz (per-example scores,
standard errors where the estimator has them, the 1 - p(y|x) baseline where it trains a full-data model, y, a,
group), DIR/memorization.json (per method and group: n, mean, median, quantiles, fraction above 0.5; what the
estimator targets; the model audited and the settings it was trained with) and DIR/fig2.png, and prints an audit
with a warning when a minority group is memorized far more than its majority. Estimators: subsample (held-in minus
held-out over K random halves), trak (TRAK self-influence over M models), newton / loo / influence (L2-logistic
heads, need --weight-decay > 0).

Your own model: --data PATH.csv (or an ImageFolder tree) --backbone package.module:Name audits your network,
trained end to end (--end-to-end, the default for your own network) or as a frozen feature extractor under
memaware's heads (--frozen, the default for memaware's catalogued backbones)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine import OPTIMIZERS
from ..errors import ConfigError
from ..memorization.scores import AUDIT_METHODS, LINEAR_DEFAULT_WD, TARGETS
from .common import TABLE_HELP, add_common, add_table_flags, comma_items, hidden_widths, in_data, in_dir, in_path

LINEAR_ESTIMATORS = ("newton", "loo", "influence")
HEADS_EPOCHS = 1000  # --epochs for memaware's heads on features (the Setup 2.1 protocol)


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(comma_items(text, "--methods"))
    bad = [m for m in methods if m not in AUDIT_METHODS]
    if not methods or bad or len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(
            f"--methods takes distinct comma-separated names from {', '.join(AUDIT_METHODS)}, got '{text}'"
        )
    return methods


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", type=in_data,
        help=".npz file with x (n, d), y (n,), split (n,) and a (n,) (features: memaware's heads are audited on them); "
        "or your own data as a table (.csv) or ImageFolder tree, audited with --backbone ("
        + TABLE_HELP.partition(": ")[2] + ")",
    )  # fmt: skip
    src.add_argument("--dataset", help="real dataset read from --data-dir: waterbirds, celeba, multinli, civilcomments")
    p.add_argument("--data-dir", type=in_dir, help="root folder of --dataset")
    model = p.add_argument_group("the model audited on a table or --dataset")
    model.add_argument(
        "--backbone",
        help="the network: your own as package.module:name or file.py:name (a class or a function that, called with "
        "no argument, returns an nn.Module mapping a batch of images (b, 3, H, W) or a list of b strings to (b, d) "
        "features; memaware adds linear heads; built under --seed + m for audit model m), or one of memaware's: "
        "resnet50, efficientnet-lite0, bert, tiny-cnn, tiny-text (default: the tiny one matching the data)",
    )  # fmt: skip
    how = model.add_mutually_exclusive_group()
    how.add_argument(
        "--end-to-end", dest="training", action="store_const", const="end-to-end",
        help="train every audit model (K half-models / M models per method, MAT with its XRM phase) end to end: the "
        "backbone's weights and the heads, with --epochs/--lr/--optimizer/--batch-size as you train it. Audits the "
        "network you train; costs K (or M) full trainings per method. Default for your own network "
        "(package.module:name), whose features mean nothing before it is trained",
    )  # fmt: skip
    how.add_argument(
        "--frozen", dest="training", action="store_const", const="frozen",
        help="embed every row once with the backbone in eval mode (written to --out/features.npz, reusable with "
        "--data) and audit memaware's heads (--hidden, --bias) on those features: the cheap linear-probe audit, "
        "seconds for the heads after one pass of the backbone. Default for memaware's catalogued backbones (feature "
        "extractors)",
    )  # fmt: skip
    model.add_argument("--weights", type=in_path, help="local weights of memaware's backbones (resnet50: .pth file; "
                       "bert: dir); your own network loads its own")  # fmt: skip
    add_table_flags(model)
    model.add_argument("--device", default="cpu", help="torch device of the backbone (embedding or end-to-end "
                       "training), e.g. cpu or cuda")  # fmt: skip
    p.add_argument("--methods", type=_methods, default="erm,mat", help=f"comma-separated: {', '.join(AUDIT_METHODS)}")
    p.add_argument("--estimator", choices=tuple(TARGETS), default="subsample",
                   help="memorization estimator (--end-to-end: subsample or trak)")  # fmt: skip
    add_common(p)
    p.add_argument(
        "--num-models",
        type=int,
        default=None,
        help="K half-models (subsample, even; default 32) or M models (trak; default 5)",
    )
    p.add_argument(
        "--epochs", type=int, default=None,
        help=f"training epochs per model (MAT: per phase); default {HEADS_EPOCHS} for heads on features; required "
        "with --end-to-end (your training recipe, not memaware's)",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimiser")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help=f"L2 weight decay (default 0; {LINEAR_DEFAULT_WD:g} for newton / loo / influence)",
    )
    p.add_argument("--batch-size", type=int, default=0, help="mini-batch size; 0 = full batch (heads: batched models)")
    p.add_argument("--hidden", type=hidden_widths, default=(),
                   help="MLP hidden widths of the heads on features, e.g. 64 (default: linear head; not with "
                   "--end-to-end: put hidden layers in your network)")  # fmt: skip
    p.add_argument("--bias", action="store_true", help="give the output head a bias")
    p.add_argument("--temperature", type=float, default=0.1, help="MAT temperature on held-out logits")
    p.add_argument("--proj-dim", type=int, default=None, help="trak projection dimension k (default min(512, rank/2))")
    p.add_argument("--trak-lambda", type=float, default=0.0, help="trak ridge lambda on Phi^T Phi (0 = TRAK's own)")
    p.add_argument("--trak-params", default="all", help="trak gradient parameters: all, head (the last layer: cheap "
                   "for a large network), or a name prefix such as backbone.fc")  # fmt: skip
    p.add_argument(
        "--warn-gap",
        type=float,
        default=0.1,
        help="warn when a minority group's mean score exceeds its majority's by this much",
    )


def training_route(args: argparse.Namespace, table: bool) -> str | None:
    """'end-to-end' / 'frozen' for a table or --dataset (the flag, else the backbone's default); None for an .npz.
    Refuses flags that do not apply, in one line, before any work."""
    if args.data is not None and not table:
        if args.data_dir or args.backbone or args.weights:
            raise ConfigError(
                "--data-dir, --backbone and --weights go with --dataset or a table (--data PATH.csv or an image "
                f"folder); {args.data} holds features already"
            )
        given = [f for f, v in (("--end-to-end/--frozen", args.training), ("--image-size", args.image_size),
                                ("--image-root", args.image_root), ("--normalize", args.normalize)) if v is not None]
        if given:
            raise ConfigError(f"{given[0]} applies to a table (.csv) or --dataset; {args.data} is an .npz of features")
        return None
    if args.data is not None and args.data_dir:
        raise ConfigError("--data-dir goes with --dataset; a table's image paths are relative to it (or --image-root)")
    if args.dataset is not None and (args.image_root or args.normalize):
        raise ConfigError("--image-root and --normalize apply to a table given as --data, not to --dataset")
    from ..experiments.memorization import default_training

    route = args.training or default_training(args.backbone or "tiny-cnn")
    if route == "end-to-end":
        if args.estimator in LINEAR_ESTIMATORS:
            raise ConfigError(f"{args.estimator} models an L2-logistic head on features; with --end-to-end use "
                              "--estimator subsample or trak, or audit heads on frozen features")  # fmt: skip
        if args.hidden:
            raise ConfigError("--hidden shapes the heads on features; end to end the heads are linear on your "
                              "network's output: put hidden layers in --backbone, or use --frozen")  # fmt: skip
        if args.epochs is None:
            raise ConfigError("--end-to-end trains your network K (or M) times per method: give --epochs (and --lr, "
                              "--optimizer, --batch-size as you train it)")  # fmt: skip
    return route


def run(args: argparse.Namespace) -> int:
    if args.dataset is not None and not args.data_dir:
        raise ConfigError(f"--dataset {args.dataset} needs --data-dir (the folder holding its files)")
    from ..data.datasets import is_table_path  # numpy only

    table = args.data is not None and is_table_path(args.data)
    route = training_route(args, table)
    if args.num_models is not None and args.num_models < 1:
        raise ConfigError(f"--num-models must be >= 1, got {args.num_models}")
    if args.warn_gap < 0:
        raise ConfigError(f"--warn-gap must be >= 0, got {args.warn_gap}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    # torch, matplotlib and the estimators: once the arguments are known to be good
    from ..experiments.memorization import audit_config, own_model_input, run_audit
    from ..memorization.audit import audit_text

    extra: dict = {"model_kwargs": {"hidden": args.hidden, "bias": args.bias}}
    model_record, about = None, None
    if route is None:
        from ..data import load_npz

        data, source = load_npz(args.data), str(args.data)
    else:
        dataset = _open(args, table)  # fills in the default backbone of the data's modality
        inp = own_model_input(
            dataset, args.backbone, training=route, weights=args.weights, seed=args.seed,
            bias=args.bias, device=args.device, out=args.out, source=_source(args, table), progress=not args.quiet,
        )  # fmt: skip
        data, source, model_record, about = inp.data, inp.source, inp.model, inp.about
        if inp.model_factory is not None:
            extra = {"model_factory": inp.model_factory}
    cfg = audit_config(
        args.estimator, args.epochs or HEADS_EPOCHS, args.lr, args.optimizer, args.momentum, args.weight_decay,
        args.batch_size, args.seed, device=args.device if route == "end-to-end" else "cpu",
    )  # fmt: skip
    result = run_audit(
        data, args.methods, args.estimator, cfg, args.out, source, args.warn_gap, progress=not args.quiet,
        model=model_record, about=about, num_models=args.num_models, temperature=args.temperature,
        proj_dim=args.proj_dim, trak_lambda=args.trak_lambda, trak_params=args.trak_params, **extra,
    )  # fmt: skip
    if not args.quiet:
        print(audit_text(result, str(args.out)))
    return 0


def _open(args: argparse.Namespace, table: bool):
    """The RealDataset of a table (``--data``) or of ``--dataset`` (its backbone's default filled in)."""
    if table:
        from ..sweep.runner import open_table

        spec = {"data": args.data, "backbone": args.backbone, "normalize": args.normalize,
                "image_root": args.image_root, "image_size": args.image_size, "resize": args.resize}  # fmt: skip
        dataset = open_table(spec)[1]
    else:
        from ..data.datasets import open_dataset

        dataset = open_dataset(args.dataset.lower(), args.data_dir, image_size=args.image_size or 224)
    if args.backbone is None:
        args.backbone = "tiny-cnn" if dataset.modality == "image" else "tiny-text"
    return dataset


def _source(args: argparse.Namespace, table: bool) -> str:
    return str(Path(args.data)) if table else f"{args.dataset} in {args.data_dir}"
