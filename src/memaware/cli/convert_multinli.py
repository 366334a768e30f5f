"""Convert MultiNLI's pickled GLUE feature caches, once, into the plain arrays that `memaware features` reads.

The caches of the standard release (multinli_bert_features.tar.gz, extracted into DATA_DIR/multinli/glue_data/MNLI/:
cached_train_bert-base-uncased_128_mnli, cached_dev_bert-base-uncased_128_mnli and ..._mnli-mm) are lists of
utils_glue.InputFeatures objects written with torch.save, i.e. Python pickles. This command is the only place
memaware unpickles anything, and it reads only those three files under the --data-dir you give. Its unpickler is
restricted: InputFeatures become plain attribute holders and every other class or function a file names is refused,
so a tampered file cannot run code. It writes DATA_DIR/multinli/features_bert_128.npz (input_ids int32, input_mask
and segment_ids int8, each (N, 128), and label_id int64 (N,), rows in the order train, dev-matched, dev-mismatched)
atomically; the MultiNLI loader reads only that file.

Without the caches, --tokenizer DIR builds the same arrays from the official MultiNLI 1.0 release instead: the rows of
group_DRO's DATA_DIR/multinli/data/metadata_random.csv taken from multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl
(in multinli/data/, multinli/multinli_1.0/ or multinli/), tokenised as the caches were (BERT pair encoding, 128
tokens) with the transformers tokenizer saved in the local folder DIR (bert-base-uncased's for the caches' ids;
nothing is downloaded). Nothing is unpickled on that path."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..data.datasets.multinli import NAME
from .common import in_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        required=True,
        type=in_dir,
        help=f"dataset root holding {NAME}/glue_data/MNLI/ (the output goes to {NAME}/features_bert_128.npz)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="DIR",
        type=in_dir,
        help="tokenise the MultiNLI 1.0 jsonl files with the local tokenizer folder DIR instead of reading the caches",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    # tqdm writes to stderr: the bar shows on a terminal only, never with --quiet
    from ..experiments.convert_multinli import convert  # torch: once the arguments are good

    res = convert(args.data_dir, tokenizer=args.tokenizer, progress=not args.quiet and sys.stderr.isatty())
    if not args.quiet:
        print(summary(res))
    return 0


def summary(res: dict[str, Any]) -> str:
    train, dev, dev_mm = res["file_rows"].values()
    return (
        f"converted {res['rows']:,} rows (train {train:,} + dev-matched {dev:,} + dev-mismatched {dev_mm:,}; "
        f"{res['length']} tokens each) from {res['source']} into {res['out']} "
        f"({res['bytes'] / 2**20:.1f} MiB); `memaware features --dataset {NAME}` reads only that file"
    )
