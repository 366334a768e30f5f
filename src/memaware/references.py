"""``module:name`` references to a user's own code (a method class, a backbone), imported on demand.

The part before the colon is a dotted module importable from ``sys.path`` (``package.module``) or the path of a
Python file (``nets/small.py``). As ``python -m`` does, the current directory is searched too, so a ``mymodel.py``
beside the command line works from the ``memaware`` console script. Every failure is one ``ConfigError`` line that
names the reference and what went wrong; the module's own exception is summarised, never re-raised as a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConfigError


def is_reference(text: str) -> bool:
    """Whether ``text`` names user code (``module:name``) rather than a registered name."""
    return ":" in text and not text.startswith(":") and not text.endswith(":")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _import_file(path: Path, what: str, ref: str) -> ModuleType:
    name = f"memaware_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} '{ref}': {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's module failed while importing: one line, never a traceback
        del sys.modules[name]
        raise ConfigError(f"{what} '{ref}': importing {path} failed ({type(e).__name__}: {_first_line(e)})") from None
    return module


def _import_module(module_name: str, what: str, ref: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        top = module_name.partition(".")[0]
        if e.name == top and cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)  # what `python -m` gives: the current directory first
            try:
                return importlib.import_module(module_name)
            except ImportError:
                sys.path.remove(cwd)
        raise ConfigError(f"{what} '{ref}': cannot import module '{module_name}' ({e})") from None
    except ImportError as e:
        raise ConfigError(f"{what} '{ref}': cannot import module '{module_name}' ({e})") from None
    except Exception as e:
        raise ConfigError(
            f"{what} '{ref}': importing module '{module_name}' failed ({type(e).__name__}: {_first_line(e)})"
        ) from None


def import_reference(ref: str, what: str) -> Any:
    """The object ``ref`` (``package.module:name`` or ``path/to/file.py:name``) names; ``what`` ('method',
    'backbone') starts every error message."""
    module_name, _, attr = ref.rpartition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} '{ref}': give package.module:name or path/to/file.py:name")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ConfigError(f"{what} '{ref}': no such file {path}")
        module = _import_file(path, what, ref)
    else:
        module = _import_module(module_name, what, ref)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} '{ref}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


__all__ = ["is_reference", "import_reference"]
