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


def not_a_file_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file to read, in words (a missing file, a broken link or a link loop, a FIFO,
    a socket, a device, a directory), or None when it is one."""
    import stat

    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return "a link to a missing file (broken symbolic link)" if p.is_symlink() else "no such file"
    except OSError as e:
        if e.errno == 40:  # ELOOP
            return "a symbolic link loop (it points back to itself)"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    mode = st.st_mode
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")  # fmt: skip
    return f"is {kind}, not a regular file"


def member_problem(path: str | os.PathLike, key: str) -> str | None:
    """Why the array ``key`` of the ``.npz`` at ``path`` cannot be read, judged from its header before any
    allocation: a header declaring more bytes than the member holds (a damaged or truncated file, or a forged
    header asking for 149 GiB), an object array (pickled), an unreadable header. None when it looks whole."""
    import numpy as np

    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(f"{key}.npy")
            with z.open(info) as f:
                fmt = np.lib.format
                version = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(f)
                header = f.tell()
    except KeyError:
        return None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, SyntaxError) as e:
        return f"field '{key}' has an unreadable header ({type(e).__name__}); the file is damaged"
    if dtype.hasobject:
        return f"field '{key}' is an object (pickled) array; store plain numeric arrays"
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if declared > info.file_size - header:
        return (
            f"field '{key}' declares shape {tuple(shape)} of {dtype} ({declared / 2**30:.3g} GiB) but holds "
            f"{max(info.file_size - header, 0)} bytes; the file is truncated or damaged"
        )
    return None


__all__ = ["not_npz_reason", "not_a_file_reason", "member_problem", "SAVE_HINT"]
