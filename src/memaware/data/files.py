"""Recognising the file a user gave where an ``.npz`` archive was expected, from its first bytes, so that a CSV,
a pickle, a torch checkpoint or an empty file each get a message that says what it is (numpy alone would call a
CSV 'pickled data' and suggest allow_pickle, which memaware never sets)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

SAVE_HINT = "save plain arrays with numpy.savez(path, x=..., y=..., split=..., a=...)"


def _torch_zip(path: Path) -> bool:
    """torch.save's zip format: one folder holding data.pkl (and version, byteorder, data/...)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _text_head(head: bytes) -> str | None:
    """The first line of ``head`` if it reads as text (UTF-8, no NUL bytes), else None."""
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the head
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return text.splitlines()[0] if text.strip() else ""


def not_npz_reason(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` is not an ``.npz`` archive, in words naming what it is instead, or None when it is
    a zip archive that is not a torch file (then numpy reads it and checks its fields)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return f"the file is empty (0 bytes); {SAVE_HINT}"
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        if _torch_zip(path):
            return f"is a PyTorch file (torch.save), not an .npz archive; {SAVE_HINT}"
        return None
    if head.startswith(b"\x93NUMPY"):
        return f"is a single .npy array, not an .npz archive of named fields; {SAVE_HINT}"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return (
            "is a Python pickle (or a legacy torch.save file), not an .npz archive; memaware never unpickles data; "
            + SAVE_HINT
        )
    first = _text_head(head)
    if first is not None:
        shown = first.strip()[:60] + ("..." if len(first.strip()) > 60 else "")
        if any(sep in first for sep in (",", "\t", ";")):
            kind = "a text table (CSV)"
        else:
            kind = "a text file"
        return f"is {kind}, not an .npz archive (first line '{shown}'); load it and {SAVE_HINT}"
    return f"is not an .npz archive (unrecognised content, first bytes {head[:8]!r}); {SAVE_HINT}"


__all__ = ["not_npz_reason", "SAVE_HINT"]
