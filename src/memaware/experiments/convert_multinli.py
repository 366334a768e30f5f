"""MultiNLI's pickled GLUE feature caches (``cached_{train,dev}_bert-base-uncased_128_mnli[-mm]``, lists of
``utils_glue.InputFeatures`` written with torch.save) converted, once, into the plain arrays that ``memaware features``
reads (``memaware convert-multinli``). This is the only place memaware unpickles anything: through a restricted
unpickler that turns InputFeatures into plain attribute holders and refuses every other class or function a file
names, so a tampered file cannot run code. ``convert`` writes DATA_DIR/multinli/features_bert_128.npz atomically."""

from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import atomic_writer
from ..data.datasets.common import check_root
from ..data.datasets.multinli import GLUE_FILES, dataset_folder, features_path, glue_paths
from ..errors import DataError

CHUNK = 20_000  # rows converted at a time: bounds the transient memory of Python lists -> arrays
# field names of utils_glue.InputFeatures, then of transformers' later InputFeatures dataclass
FIELDS = {
    "input_ids": ("input_ids",),
    "input_mask": ("input_mask", "attention_mask"),
    "segment_ids": ("segment_ids", "token_type_ids"),
    "label_id": ("label_id", "label"),
}
DTYPES = {"input_ids": np.int32, "input_mask": np.int8, "segment_ids": np.int8}


class InputFeatures:
    """Stand-in for ``utils_glue.InputFeatures``: pickle fills its ``__dict__`` (BUILD); no code of the file runs."""


class RefusedGlobal(pickle.UnpicklingError):
    """The file names a class or function outside the allowlist."""


# what a list of InputFeatures (possibly holding tensors) needs, and nothing else
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves any ``*.InputFeatures`` to the stand-in and refuses every global not in ``_ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "InputFeatures":  # utils_glue (the release), __main__ or run_glue, depending on who saved it
            return InputFeatures
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"refusing to unpickle {module}.{name}") from None


def _restricted_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load``: its ``load`` (legacy-format headers) and ``Unpickler`` (the
    payload, which torch subclasses to resolve storages) both go through ``RestrictedUnpickler``."""
    mod = types.ModuleType("memaware_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    return mod


def unpickle_cache(path: Path) -> list:
    """The list of feature objects in one GLUE cache, through the restricted unpickler."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())
    except RefusedGlobal as e:
        raise DataError(f"{path}: {e} (only lists of InputFeatures are accepted)") from None
    except Exception as e:  # corrupt, truncated, or not a torch.save file at all
        first = (str(e).splitlines() or [""])[0][:200]
        raise DataError(f"{path}: not a readable GLUE feature cache ({type(e).__name__}: {first})") from None
    if not isinstance(obj, list | tuple):
        raise DataError(f"{path}: expected a list of InputFeatures, found {type(obj).__name__}")
    if not obj:
        raise DataError(f"{path}: holds no examples")
    return list(obj)


def _field(obj: Any, key: str, path: Path, i: int) -> Any:
    state = vars(obj) if isinstance(obj, InputFeatures) else {}
    for name in FIELDS[key]:
        if name in state:
            v = state[name]
            return v.tolist() if isinstance(v, torch.Tensor) else v
    raise DataError(f"{path}: example {i} has no field {' or '.join(FIELDS[key])} (not an InputFeatures list)")


def features_to_arrays(features: list, path: Path) -> dict[str, np.ndarray]:
    """InputFeatures list -> input_ids (N, L) int32, input_mask / segment_ids (N, L) int8, label_id (N,) int64."""
    n = len(features)
    length = len(_field(features[0], "input_ids", path, 0))
    out = {k: np.empty((n, length), dtype=dt) for k, dt in DTYPES.items()}
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, CHUNK):
        chunk = features[start : start + CHUNK]
        for key, dtype in DTYPES.items():
            rows = [_field(f, key, path, start + j) for j, f in enumerate(chunk)]
            try:
                arr = np.asarray(rows, dtype=np.int64)
            except (ValueError, TypeError) as e:
                raise DataError(f"{path}: field '{key}' is not an integer array of equal-length rows") from e
            if arr.ndim != 2 or arr.shape[1] != length:
                raise DataError(f"{path}: field '{key}' has rows of length {arr.shape[1:]}, expected {length}")
            info = np.iinfo(dtype)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise DataError(f"{path}: field '{key}' has values outside {np.dtype(dtype).name}")
            out[key][start : start + len(chunk)] = arr
        lab = [_field(f, "label_id", path, start + j) for j, f in enumerate(chunk)]
        labels[start : start + len(chunk)] = [-1 if v is None else int(v) for v in lab]
    out["label_id"] = labels  # type: ignore[assignment]
    return out


def _from_caches(folder: Path) -> dict[str, Any]:
    """Token arrays from the three pickled GLUE caches under ``folder``, through the restricted unpickler."""
    paths = glue_paths(folder)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"missing {', '.join(missing)} in {paths[0].parent}/: extract multinli_bert_features.tar.gz there "
            f"(the GLUE feature caches of the group_DRO release), or tokenise the MultiNLI 1.0 jsonl files with "
            f"--tokenizer DIR"
        )
    parts, counts = [], []
    for path in paths:
        arrays = features_to_arrays(unpickle_cache(path), path)
        if parts and arrays["input_ids"].shape[1] != parts[0]["input_ids"].shape[1]:
            raise DataError(
                f"{path}: sequences of length {arrays['input_ids'].shape[1]}, "
                f"{paths[0].name} has {parts[0]['input_ids'].shape[1]}"
            )
        parts.append(arrays)
        counts.append(len(arrays["label_id"]))
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"arrays": merged, "file_rows": dict(zip(GLUE_FILES, counts, strict=True)), "rows": int(sum(counts))}


def convert(data_dir: str | Path, tokenizer: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Writes the MultiNLI token arrays ``features_path(folder)`` of the MultiNLI folder under ``data_dir``: from
    the pickled GLUE caches, or, with ``tokenizer`` (a local tokenizer folder), from the MultiNLI 1.0 jsonl files
    and group_DRO's metadata_random.csv (``progress``: a bar while tokenising). Returns a summary (out, rows,
    file_rows, length, bytes, source)."""
    root = check_root(data_dir)
    folder = dataset_folder(root)
    if tokenizer is not None:
        from ..data.datasets.multinli_release import load_tokenizer, tokenize_release

        res = tokenize_release(folder, load_tokenizer(tokenizer), progress=progress)
        source = "the MultiNLI 1.0 jsonl files"
    else:
        res = _from_caches(folder)
        source = "the pickled GLUE caches"
    merged = dict(res["arrays"])
    merged["file_rows"] = np.asarray(list(res["file_rows"].values()), dtype=np.int64)
    merged["source"] = np.asarray(source)  # a plain unicode array: readable with allow_pickle=False
    out = features_path(folder)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **merged)

    atomic_writer(out, write, ".npz")
    return {
        "out": out,
        "rows": int(res["rows"]),
        "file_rows": res["file_rows"],
        "length": int(merged["input_ids"].shape[1]),
        "bytes": out.stat().st_size,
        "source": source,
    }


__all__ = ["convert", "unpickle_cache", "features_to_arrays", "RestrictedUnpickler", "InputFeatures"]
