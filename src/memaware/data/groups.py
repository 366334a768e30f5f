"""The data contract: ``GroupData`` (x, y, a, split), group ids, and validated ``.npz`` interchange files.

Group id = y * A + a, with A the number of attribute values over *all* splits (never per split), so that a group
means the same thing in train, validation and test. ``a = -1`` marks an unknown attribute.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import atomic_writer
from ..errors import DataError
from ..lazy import lazy_module
from .files import member_problem, not_a_file_reason, not_npz_reason

torch = lazy_module("torch")

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VAL: "validation", TEST: "test"}
REQUIRED_KEYS = ("x", "y", "split")
OPTIONAL_KEYS = ("a",)
MAX_ABS_X = 1e15  # larger features overflow float32 products and sums (3.4e38) in the first steps


@dataclass(frozen=True)
class GroupData:
    """A labelled dataset with a (possibly unknown) attribute and a split code per example.

    Shapes: ``x`` (n, d) float32; ``y`` (n,) int64 in 0..K-1; ``a`` (n,) int64 in 0..A-1 or -1 (unknown);
    ``split`` (n,) int8 in {0 train, 1 validation, 2 test}.
    """

    x: torch.Tensor
    y: torch.Tensor
    a: torch.Tensor
    split: torch.Tensor
    num_classes: int
    num_attrs: int

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        split: np.ndarray | torch.Tensor,
        a: np.ndarray | torch.Tensor | None = None,
        source: str = "arrays",
        num_classes: int | None = None,
        require_splits: tuple[int, ...] = (TRAIN, VAL, TEST),
    ) -> GroupData:
        """Validates the arrays (see ``validate_arrays``) and builds a ``GroupData``."""
        arrays = {"x": _np(x), "y": _np(y), "split": _np(split)}
        if a is not None:
            arrays["a"] = _np(a)
        x_np, y_np, a_np, s_np = validate_arrays(arrays, source, require_splits)
        check_classes(y_np, s_np, source, num_classes)
        k = int(y_np.max()) + 1
        if num_classes is not None:
            if num_classes < k:
                raise DataError(f"{source}: field 'y' has label {k - 1} but num_classes={num_classes}")
            k = num_classes
        num_attrs = int(a_np.max()) + 1 if (a_np >= 0).any() else 1
        return cls(
            x=torch.from_numpy(x_np),
            y=torch.from_numpy(y_np),
            a=torch.from_numpy(a_np),
            split=torch.from_numpy(s_np),
            num_classes=max(k, 2),
            num_attrs=num_attrs,
        )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_groups(self) -> int:
        return self.num_classes * self.num_attrs

    @property
    def group(self) -> torch.Tensor:
        """(n,) int64 group id y * A + a; -1 where the attribute is unknown."""
        g = self.y * self.num_attrs + self.a
        return torch.where(self.a >= 0, g, torch.full_like(g, -1))

    def indices(self, split: int) -> torch.Tensor:
        return torch.nonzero(self.split == split, as_tuple=False).squeeze(1)

    def has_attrs(self, split: int) -> bool:
        """Whether every example of ``split`` has a known attribute."""
        return bool((self.a[self.split == split] >= 0).all())

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Writes the interchange file (keys x, y, a, split) atomically; readable by ``load_npz``."""
        arrays = {
            "x": self.x.numpy().astype(np.float32),
            "y": self.y.numpy().astype(np.int64),
            "a": self.a.numpy().astype(np.int64),
            "split": self.split.numpy().astype(np.int8),
        }

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        return atomic_writer(path, write, ".npz")


def group_name(group_id: int, num_attrs: int) -> str:
    """'y=<y>,a=<a>' for a group id (y * A + a)."""
    return f"y={group_id // num_attrs},a={group_id % num_attrs}"


def named_group(key: str, label_names: list[str] | None = None, attr_names: list[str] | None = None) -> str:
    """A group key 'y=<y>,a=<a>' with the table's names added: 'y=1 (ring), a=0 (green)' (the key as is when the
    data has no names)."""
    if not label_names and not attr_names:
        return key
    y_text, _, a_text = key.partition(",")
    parts = []
    for text, names in ((y_text, label_names), (a_text, attr_names)):
        field, _, value = text.partition("=")
        name = names[int(value)] if names and value.isdigit() and int(value) < len(names) else None
        parts.append(f"{field}={value} ({name})" if name is not None and name != value else text)
    return ", ".join(p for p in parts if p) if "(" in "".join(parts) else key


def _np(v: np.ndarray | torch.Tensor) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def _as_int(arr: np.ndarray, name: str, source: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{source}: field '{name}' must hold integers, found {arr[i].item()!r} at index {i}"
            )
        return arr.astype(np.int64)
    raise DataError(f"{source}: field '{name}' must hold integers, found dtype {arr.dtype}")


def validate_arrays(
    arrays: dict[str, np.ndarray], source: str, require_splits: tuple[int, ...] = (TRAIN, VAL, TEST)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checks the data contract and returns (x float32, y int64, a int64, split int8).

    Raises ``DataError`` with one line naming ``source``, the field and the offending value.
    """
    for key in REQUIRED_KEYS:
        if key not in arrays:
            raise DataError(f"{source}: missing required field '{key}' (need x, y, split; a is optional)")
    x = arrays["x"]
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{source}: field 'x' must be numeric, found dtype {x.dtype}")
    if np.iscomplexobj(x):  # float32 would drop the imaginary part without a word
        raise DataError(f"{source}: field 'x' is complex ({x.dtype}); store real features (e.g. real and imaginary "
                        "parts as two columns)")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"{source}: field 'x' must be 2-D (n, d), found shape {x.shape}")
    n = x.shape[0]
    if n == 0 or x.shape[1] == 0:
        raise DataError(f"{source}: field 'x' is empty (shape {x.shape})")
    for key in ("y", "split", "a"):
        if key in arrays and arrays[key].reshape(-1).shape[0] != n:
            raise DataError(
                f"{source}: field '{key}' has {arrays[key].reshape(-1).shape[0]} entries but 'x' has {n} rows"
            )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(
            f"{source}: field 'x' has a non-finite value {x[tuple(bad)]} at row {bad[0]}, column {bad[1]}"
        )
    big = np.abs(x) > MAX_ABS_X
    if big.any():  # squared or summed in float32, such a value overflows to inf and the run diverges
        bad = np.argwhere(big)[0]
        raise DataError(
            f"{source}: field 'x' has {x[tuple(bad)]:.3g} at row {bad[0]}, column {bad[1]}; features beyond "
            f"{MAX_ABS_X:.0e} in magnitude overflow float32 arithmetic: rescale them (e.g. standardise)"
        )
    y = _as_int(arrays["y"].reshape(-1), "y", source)
    if (y < 0).any():
        i = int(np.argmax(y < 0))
        raise DataError(f"{source}: field 'y' must be in 0..K-1, found {y[i]} at index {i}")
    split = _as_int(arrays["split"].reshape(-1), "split", source)
    bad_split = ~np.isin(split, (TRAIN, VAL, TEST))
    if bad_split.any():
        i = int(np.argmax(bad_split))
        raise DataError(
            f"{source}: field 'split' must be 0 (train), 1 (validation) or 2 (test), found {split[i]} at index {i}"
        )
    for s in require_splits:
        if not (split == s).any():
            raise DataError(f"{source}: split {s} ({SPLIT_NAMES[s]}) has no examples")
    if "a" in arrays:
        a = _as_int(arrays["a"].reshape(-1), "a", source)
        if (a < -1).any():
            i = int(np.argmax(a < -1))
            raise DataError(
                f"{source}: field 'a' must be in 0..A-1 or -1 (unknown), found {a[i]} at index {i}"
            )
    else:
        a = np.full(n, -1, dtype=np.int64)
    return x, y, a, split.astype(np.int8)


def check_classes(y: np.ndarray, split: np.ndarray, source: str, num_classes: int | None) -> None:
    """Refuses labels with gaps (when the number of classes is not given), which would train a head for a class
    that has no example. A training split of one class is refused by ``fit`` (a classifier needs two)."""
    if num_classes is None:
        present = np.unique(y)
        gaps = sorted(set(range(int(present[-1]) + 1)) - {int(v) for v in present})
        if gaps:
            shown = ", ".join(str(int(v)) for v in present[:8]) + (" ..." if len(present) > 8 else "")
            raise DataError(
                f"{source}: field 'y' has labels {shown}: label {gaps[0]} has no example; number the classes 0..K-1"
            )


def load_npz(path: str | os.PathLike, num_classes: int | None = None) -> GroupData:
    """Reads and validates an interchange ``.npz`` (keys x, y, split, optional a). Never unpickles."""
    path = Path(path)
    source = str(path)
    missing = not_a_file_reason(path)
    if missing:
        raise DataError(f"{source}: {missing}")
    try:
        reason = not_npz_reason(path)
    except OSError as e:
        raise DataError(f"{source}: cannot be read ({e.strerror or e})") from e
    if reason:
        raise DataError(f"{source}: {reason}")
    arrays: dict[str, np.ndarray] = {}
    try:
        loaded = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DataError(f"{source}: not a readable .npz file ({e})".splitlines()[0]) from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(
            f"{source}: not an .npz archive (a single array); save with numpy.savez(x=..., y=..., split=...)"
        )
    with loaded as npz:
        for key in npz.files:
            if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
                continue
            problem = member_problem(path, key)
            if problem:
                raise DataError(f"{source}: {problem}")
            try:
                arrays[key] = npz[key]
            except ValueError as e:  # object arrays need pickle, which we refuse
                raise DataError(
                    f"{source}: field '{key}' is an object (pickled) array; store plain numeric arrays"
                ) from e
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise DataError(f"{source}: field '{key}' could not be read ({type(e).__name__})") from e
    for key in REQUIRED_KEYS:
        if key not in arrays:
            raise DataError(f"{source}: missing required field '{key}' (need x, y, split; a is optional)")
    if arrays["x"].ndim != 2:  # a file's x is (n, d) as written: 1-D could be one feature or one example
        raise DataError(
            f"{source}: field 'x' must be 2-D (n, d), found shape {arrays['x'].shape}; for one feature save x[:, None]"
        )
    return GroupData.from_arrays(
        arrays["x"], arrays["y"], arrays["split"], arrays.get("a"), source=source, num_classes=num_classes
    )
