"""Exceptions raised at the library's boundary.

Every error a user can cause by bad input is a ``MemawareError`` (a ``ValueError``), whose message is one line
naming the file, field and value at fault. The CLI prints that line and exits with status 2.
"""

from __future__ import annotations


class MemawareError(ValueError):
    """Bad input: the message is one line, fit to print to a user as is."""


class DataError(MemawareError):
    """A dataset (``.npz`` file, arrays, layout) violates the data contract."""


class ConfigError(MemawareError):
    """An option or hyper-parameter is out of its valid range."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or weight: the run stopped there (the CLI exits with status 3). The
    message is one line naming the method, phase, epoch, step and value, with a hint; the last checkpoint written
    before it is kept."""

    def __init__(self, message: str, *, method: str = "", phase: str = "", epoch: int = 0, step: int = 0,
                 value: float = float("nan")) -> None:  # fmt: skip
        super().__init__(message)
        self.method, self.phase, self.epoch, self.step, self.value = method, phase, epoch, step, value


def io_failure(e: OSError) -> str:
    """One line for a failed read or write: what happened (no space left, ...) and the file."""
    import errno
    import os

    what = os.strerror(e.errno) if e.errno else str(e)
    name = f" writing {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return (f"no space left on device{name}; free some space and run the same command with --resume (the "
                "last checkpoint written is kept)")
    return f"{what.lower()}: {e.filename}" if e.filename else (str(e).splitlines() or [what])[0]
