"""Heavy modules imported on first use, so that the ``memaware`` command answers ``--help`` and bad arguments
without paying for torch (about 1.3 s here, more than a whole Fig. 1 fit).

``lazy_module("torch")`` is a stand-in bound at import time that imports the real module at its first attribute
access; after that, every attribute is read from the stand-in's own ``__dict__`` (a copy of the module's), so a hot
loop pays nothing for the indirection. Only attribute access is deferred: ``isinstance(x, torch.Tensor)`` works,
``@torch.no_grad()`` as a decorator does not (it runs at definition time): use ``no_grad`` below. Nothing is put
into ``sys.modules`` before the real import, so ``"torch" in sys.modules`` still says whether torch was loaded.

``lazy_exports(package_name, {name: module})`` is a module-level ``__getattr__`` (PEP 562) for a package's
``__init__``: ``from memaware import fit`` imports ``memaware.engine`` then, not when ``memaware`` is imported.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class LazyModule:
    """A module imported at the first attribute access (module docstring)."""

    def __init__(self, name: str) -> None:
        self.__dict__["lazy_module_name"] = name
        self.__dict__["lazy_loaded"] = False

    def __getattr__(self, attr: str) -> Any:
        # only reached for names not yet in __dict__: the first access, or a submodule imported later
        module = importlib.import_module(self.__dict__["lazy_module_name"])
        if not self.__dict__["lazy_loaded"]:
            self.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
            self.__dict__["lazy_loaded"] = True
        value = getattr(module, attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module '{self.__dict__['lazy_module_name']}'>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports it at the first attribute access."""
    return LazyModule(name)


def no_grad(fn: F) -> F:
    """``@torch.no_grad()`` for functions defined in modules that must import without torch. When gradients are
    already off (the engine's steps), the function is called as is: entering and leaving the context costs ~4 us,
    which several hooks per step of a small model add up to a few per cent of it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        torch = sys.modules["torch"] if "torch" in sys.modules else importlib.import_module("torch")
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` for ``package``: ``exports`` maps a public name to the module that defines it."""

    def getattr_(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    return getattr_
