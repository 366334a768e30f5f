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
