"""Say what is on disk under --data-dir for Waterbirds, CelebA, MultiNLI and CivilComments: the download layout
found for each (the set-up scripts' metadata_<name>.csv, the Waterbirds tarball, the WILDS bundles, the published
or Kaggle CelebA lists, group_DRO's folders, the CivilComments release file), or what is missing and how to get it;
rows per split and per group (y, a), to compare with the published counts in the README; and the listed images,
texts or token arrays that are absent. Nothing is downloaded and nothing under --data-dir is changed.

--json prints the report as JSON (keys: see memaware.data.datasets.inventory), --out also writes it to a file, and
--export OUTDIR writes the standard OUTDIR/<name>/metadata_<name>.csv (id, filename, split, y, a; for CivilComments
also the comment texts its filename indexes) of every dataset found, so other tools read the same split and groups.
Exit 0 when the inspection ran (a missing dataset is reported, not an error); 2 on a bad flag or path."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..data.datasets.inventory import READERS, export, inspect
from ..errors import ConfigError
from .common import add_table_flags, in_data, in_dir, out_dir, out_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data-dir", type=in_dir, help="folder holding the datasets (or one dataset's own folder)"
    )
    src.add_argument(
        "--data", type=in_data, metavar="TABLE",
        help="check your own table instead (.csv or ImageFolder tree) as `memaware train --data` reads it: rows and "
        "groups per split with your names, image size; exit 2 with the first problem found",
    )  # fmt: skip
    add_table_flags(p)
    p.add_argument(
        "--dataset",
        action="append",
        choices=list(READERS),
        help="inspect only this dataset (repeatable; default: all four)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--out", type=out_file, help="also write the JSON report to this file (written atomically)")
    p.add_argument(
        "--export",
        metavar="OUTDIR",
        type=out_dir,
        help="write OUTDIR/<name>/metadata_<name>.csv for every dataset found (refuses to overwrite a file)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing (use with --out or --export)")


def run(args: argparse.Namespace) -> int:
    names = tuple(dict.fromkeys(args.dataset or READERS))
    if args.out is not None and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a folder; give a file name for the JSON report")
    if args.data is not None:
        if args.dataset or args.export:
            raise ConfigError("--dataset and --export go with --data-dir, not with --data")
        from ..data.datasets.table_dataset import inspect_table

        options = {"image_root": args.image_root, "image_size": args.image_size, "resize": args.resize,
                   "normalize": args.normalize}  # fmt: skip
        report = {"data_dir": str(Path(args.data).expanduser()), "datasets": [inspect_table(args.data, **options)]}
    else:
        if args.image_root or args.image_size or args.normalize:
            raise ConfigError("--image-root, --image-size and --normalize go with --data (a table)")
        report = {"data_dir": str(Path(args.data_dir).expanduser()), "datasets": inspect(args.data_dir, names)}
    if args.export is not None:
        report["exported"] = [str(p) for p in export(args.data_dir, args.export, names)]
    if args.out is not None:
        write_json(args.out, report)
    if not args.quiet:
        print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=110, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_long_words=False, break_on_hyphens=False)  # fmt: skip


def summary(report: dict[str, Any]) -> str:
    """The report as a table: one block per dataset (layout, rows and groups per split, missing files)."""
    lines = [f"datasets under {report['data_dir']}:"]
    for entry in report["datasets"]:
        head = f"{entry['dataset']:<14}{entry['status']:<11}"
        if "layout" not in entry:
            lines.append(_wrap(head + entry["message"], ""))
            continue
        lines.append(_wrap(f"{head}{entry['layout']}: {entry['layout_title']} ({entry['folder']})", ""))
        for split, counts in entry["groups"].items():
            names = entry["group_names"][split]
            groups = ", ".join(f"{names[k]} {n:,}" for k, n in counts.items())
            lines.append(_wrap(f"{split:<6}{entry['rows'][split]:>8,} rows: {groups}", "  "))
        missing = entry["missing_inputs"]
        if missing["count"]:
            examples = "; ".join(missing["examples"])
            lines.append(_wrap(f"missing under {entry['inputs']}: {missing['count']:,}, e.g. {examples}", "  "))
        elif entry.get("message"):
            lines.append(_wrap(entry["message"], "  "))
        for note in entry["notes"]:
            lines.append(_wrap(f"note: {note}", "  "))
    for path in report.get("exported", []):
        lines.append(f"exported {path}")
    return "\n".join(lines)
