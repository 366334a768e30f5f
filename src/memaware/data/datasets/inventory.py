"""What is on a user's disk (``memaware datasets``): for each of the four benchmarks, the layout found under a data
directory (or what is missing and how to get it), rows per split and per group, and the listed image / text files
that are absent; and ``export``, which writes the standard ``metadata_<name>.csv`` (id, filename, split, y, a) of
every dataset found, so that other tools read exactly the same split and groups.

Report keys per dataset: ``dataset``; ``status`` ("ok", "incomplete": found but something it needs is missing or
bad, "missing": no layout at all); ``message`` (the one-line reason, when not ok); ``layout`` and ``layout_title``;
``folder`` (the dataset folder), ``metadata`` (the file the rows come from), ``inputs`` (image folder, text file or
token arrays); ``rows`` {train, val, test}; ``groups`` {split: {"y=Y,a=A": rows}}; ``group_names``
{"y=Y,a=A": readable name}; ``missing_inputs`` {count, examples}; ``notes``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...artifacts import atomic_writer
from ...errors import DataError
from . import celeba, civilcomments, multinli, waterbirds
from .common import check_root, index_column
from .layouts import DatasetNotFound, Located

READERS: dict[str, ModuleType] = {
    "waterbirds": waterbirds,
    "celeba": celeba,
    "multinli": multinli,
    "civilcomments": civilcomments,
}
SPLITS = ("train", "val", "test")
# readable names of y and a, for the table
Y_NAMES = {
    "waterbirds": ("landbird", "waterbird"),
    "celeba": ("not blond", "blond"),
    "multinli": ("contradiction", "entailment", "neutral"),
    "civilcomments": ("non-toxic", "toxic"),
}
A_NAMES = {
    "waterbirds": ("land", "water"),
    "celeba": ("female", "male"),
    "multinli": ("no negation", "negation"),
    "civilcomments": civilcomments.IDENTITIES,
}
EXAMPLES = 3  # missing files named in a report


def group_counts(loc: Located) -> dict[str, dict[str, int]]:
    """{split: {"y=Y,a=A": rows}} over the groups present in each split, in (y, a) order."""
    meta = loc.meta
    out: dict[str, dict[str, int]] = {}
    for code, split in enumerate(SPLITS):
        mask = meta.split == code
        pairs, counts = np.unique(np.stack([meta.y[mask], meta.a[mask]], axis=1), axis=0, return_counts=True)
        out[split] = {f"y={y},a={a}": int(n) for (y, a), n in zip(pairs.tolist(), counts.tolist(), strict=True)}
    return out


def group_name(dataset: str, key: str, split: str = "val") -> str:
    """'waterbird / land' for 'y=1,a=0'; CivilComments' coarse train a means 'identity' (0) / 'none' (1)."""
    y, a = (int(part.split("=")[1]) for part in key.split(","))
    a_names = ("some identity", "no identity") if dataset == "civilcomments" and split == "train" else A_NAMES[dataset]
    a_name = a_names[a] if 0 <= a < len(a_names) else f"a={a}"
    return f"{Y_NAMES[dataset][y]} / {a_name}"


def inspect_dataset(name: str, root: Path) -> dict[str, Any]:
    """One dataset's report entry (see the module docstring for its keys)."""
    reader = READERS[name]
    entry: dict[str, Any] = {"dataset": name}
    try:
        loc = reader.locate(root)
    except DatasetNotFound as e:
        return {**entry, "status": "missing", "message": str(e)}
    except DataError as e:
        return {**entry, "status": "incomplete", "message": str(e)}
    meta = loc.meta
    groups = group_counts(loc)
    missing = reader.missing_inputs(loc)
    entry.update(
        status="ok" if not missing else "incomplete",
        layout=loc.layout.name,
        layout_title=loc.layout.title,
        folder=str(loc.found.folder),
        metadata=str(meta.path),
        inputs=str(loc.inputs),
        rows={s: int((meta.split == k).sum()) for k, s in enumerate(SPLITS)},
        groups=groups,
        group_names={s: {key: group_name(name, key, s) for key in groups[s]} for s in SPLITS},
        missing_inputs={"count": len(missing), "examples": missing[:EXAMPLES]},
        notes=list(loc.notes),
    )
    if missing:
        entry["message"] = f"{len(missing)} of the files the rows point into are missing under {loc.inputs}"
    return entry


def inspect(root: str | Path, names: tuple[str, ...] = tuple(READERS)) -> list[dict[str, Any]]:
    """The report entries of ``names`` under ``root`` (a one-line error when ``root`` is not a folder)."""
    path = check_root(root)
    return [inspect_dataset(n, path) for n in names]


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def export_files(name: str, loc: Located, outdir: Path) -> dict[Path, str]:
    """{path: text} of the standard files for one located dataset: ``<outdir>/<name>/metadata_<name>.csv``; for
    CivilComments also the texts its ``filename`` indexes (``civilcomments_<variant>.csv``), as XRM writes them."""
    meta = loc.meta
    folder = outdir / name
    files: dict[Path, str] = {}
    if name == "civilcomments":
        variant = civilcomments.variant_of(loc)
        if loc.payload is not None:
            texts, index = loc.payload
        else:
            texts = civilcomments.read_texts(loc.inputs)
            index = index_column(meta, len(texts), str(loc.inputs))
        rows = [[i, i, s, y, a] for i, (s, y, a) in enumerate(zip(meta.split, meta.y, meta.a, strict=True))]
        files[folder / f"metadata_{name}_{variant}.csv"] = _csv_text(["id", "filename", "split", "y", "a"], rows)
        files[folder / f"{name}_{variant}.csv"] = _csv_text(["comment_text"], [[texts[i]] for i in index.tolist()])
        return files
    rows = [
        [i, f, int(s), int(y), int(a)]
        for i, f, s, y, a in zip(loc.ids, meta.filename, meta.split, meta.y, meta.a, strict=True)
    ]
    files[folder / f"metadata_{name}.csv"] = _csv_text(["id", "filename", "split", "y", "a"], rows)
    return files


def export(root: str | Path, outdir: str | Path, names: tuple[str, ...] = tuple(READERS)) -> list[Path]:
    """Writes the standard files of every dataset of ``names`` found under ``root`` into ``outdir`` (each file
    atomically; none is written when any target exists or any found dataset fails to read). Returns the paths."""
    path = check_root(root)
    out = Path(outdir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"--export {out}: exists and is not a folder")
    files: dict[Path, str] = {}
    for name in names:
        try:
            loc = READERS[name].locate(path)
        except DatasetNotFound:
            continue
        files.update(export_files(name, loc, out))
    taken = next((p for p in files if p.exists()), None)
    if taken is not None:
        raise DataError(f"--export: {taken} exists; remove it or export into another folder (nothing was written)")
    for target, text in files.items():
        atomic_writer(target, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"), ".csv")
    return list(files)


__all__ = ["READERS", "inspect", "inspect_dataset", "export", "export_files", "group_counts", "group_name"]
