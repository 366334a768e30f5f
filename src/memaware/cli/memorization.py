"""Memorization audit (paper Appendix B.2, Fig. 2): per-example memorization scores of the training split
(eq. 8 with j = i) for ERM and MAT, summarised per group (y, a). Writes DIR/scores.npz (per-example scores,
standard errors where the estimator has them, the 1 - p(y|x) baseline where it trains a full-data model, y, a,
group), DIR/memorization.json (per method and group: n, mean, median, quantiles, fraction above 0.5; what the
estimator targets) and DIR/fig2.png, and prints an audit with a warning when a minority group is memorized far
more than its majority. Estimators: subsample (held-in minus held-out over K random halves), trak (TRAK
self-influence over M models), newton / loo / influence (L2-logistic heads, need --weight-decay > 0)."""

from __future__ import annotations

import argparse

from ..engine import OPTIMIZERS
from ..errors import ConfigError
from ..memorization.scores import AUDIT_METHODS, LINEAR_DEFAULT_WD, TARGETS
from .common import add_common, comma_items, hidden_widths, in_dir, in_file, in_path


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
        "--data", type=in_file, help=".npz file with x (n, d), y (n,), split (n,) and a (n,) (group attribute)"
    )
    src.add_argument("--dataset", help="real dataset read from --data-dir: waterbirds, celeba, multinli, civilcomments")
    p.add_argument("--data-dir", type=in_dir, help="root folder of --dataset")
    p.add_argument(
        "--backbone", help="--dataset: backbone embedding the rows: resnet50, bert, tiny-cnn, tiny-text (default: the "
        "tiny one matching the dataset)",
    )  # fmt: skip
    p.add_argument("--weights", type=in_path, help="--dataset: local backbone weights (resnet50: .pth file; bert: dir)")
    p.add_argument("--image-size", type=int, default=224, help="--dataset: image side for image datasets")
    p.add_argument("--device", default="cpu", help="--dataset: torch device of the embedding, e.g. cpu or cuda")
    p.add_argument("--methods", type=_methods, default="erm,mat", help=f"comma-separated: {', '.join(AUDIT_METHODS)}")
    p.add_argument("--estimator", choices=tuple(TARGETS), default="subsample", help="memorization estimator")
    add_common(p)
    p.add_argument(
        "--num-models",
        type=int,
        default=None,
        help="K half-models (subsample, even; default 32) or M models (trak; default 5)",
    )
    p.add_argument("--epochs", type=int, default=1000, help="training epochs per model (MAT: per phase)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimiser")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help=f"L2 weight decay (default 0; {LINEAR_DEFAULT_WD:g} for newton / loo / influence)",
    )
    p.add_argument("--batch-size", type=int, default=0, help="mini-batch size; 0 = full batch (batched models)")
    p.add_argument("--hidden", type=hidden_widths, default=(), help="MLP hidden widths, e.g. 64 (default: linear head)")
    p.add_argument("--bias", action="store_true", help="give the output head a bias")
    p.add_argument("--temperature", type=float, default=0.1, help="MAT temperature on held-out logits")
    p.add_argument("--proj-dim", type=int, default=None, help="trak projection dimension k (default min(512, rank/2))")
    p.add_argument("--trak-lambda", type=float, default=0.0, help="trak ridge lambda on Phi^T Phi (0 = TRAK's own)")
    p.add_argument("--trak-params", default="all", help="trak gradient parameters: all, head, or a name prefix")
    p.add_argument(
        "--warn-gap",
        type=float,
        default=0.1,
        help="warn when a minority group's mean score exceeds its majority's by this much",
    )


def run(args: argparse.Namespace) -> int:
    if args.data is not None and (args.data_dir or args.backbone or args.weights):
        raise ConfigError("--data-dir, --backbone and --weights go with --dataset; with --data give the .npz path only")
    if args.dataset is not None and not args.data_dir:
        raise ConfigError(f"--dataset {args.dataset} needs --data-dir (the folder holding its files)")
    if args.num_models is not None and args.num_models < 1:
        raise ConfigError(f"--num-models must be >= 1, got {args.num_models}")
    if args.warn_gap < 0:
        raise ConfigError(f"--warn-gap must be >= 0, got {args.warn_gap}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    # torch, matplotlib and the estimators: once the arguments are known to be good
    from ..data import load_npz
    from ..experiments.memorization import audit_config, dataset_features, run_audit
    from ..memorization.audit import audit_text

    if args.dataset is not None:
        data, source = dataset_features(
            args.dataset.lower(), args.data_dir, args.out, args.backbone, args.weights, args.seed, args.image_size,
            args.device, progress=not args.quiet,
        )  # fmt: skip
    else:
        data, source = load_npz(args.data), str(args.data)
    cfg = audit_config(
        args.estimator,
        args.epochs,
        args.lr,
        args.optimizer,
        args.momentum,
        args.weight_decay,
        args.batch_size,
        args.seed,
    )
    result = run_audit(
        data,
        args.methods,
        args.estimator,
        cfg,
        args.out,
        source,
        args.warn_gap,
        progress=not args.quiet,
        num_models=args.num_models,
        model_kwargs={"hidden": args.hidden, "bias": args.bias},
        temperature=args.temperature,
        proj_dim=args.proj_dim,
        trak_lambda=args.trak_lambda,
        trak_params=args.trak_params,
    )
    if not args.quiet:
        print(audit_text(result, str(args.out)))
    return 0
