"""Name -> method class. ``@register`` adds a class; ``method_class`` also resolves ``package.module:Class``
references to a user's own ``Method`` subclass (imported on demand, no edit of memaware needed)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..references import import_reference, is_reference
from .base import Method

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: adds ``cls`` under ``cls.name`` (a second class with the same name is an error)."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The registered class ``name``, or the ``Method`` subclass a ``package.module:Class`` (or
    ``path/file.py:Class``) reference names (``memaware.references``).

    Raises ``ConfigError`` with one line for an unknown name, a module that does not import, a missing attribute
    or an attribute that is not a ``memaware.methods.Method`` subclass.
    """
    if not is_reference(name):
        if name not in METHODS:
            raise ConfigError(
                f"unknown method '{name}', choose from {', '.join(sorted(METHODS))} or give module:Class"
            )
        return METHODS[name]
    cls = import_reference(name, "method")
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        attr = name.rpartition(":")[2]
        raise ConfigError(f"method '{name}': {attr} is not a subclass of memaware.methods.Method")
    return cls


def make_method(name: str, **hparams: Any) -> Method:
    """Instantiates the method ``name`` (registered name or ``module:Class``) with ``hparams``."""
    return method_class(name)(**hparams)


def classifiers() -> list[str]:
    """Registered classification methods, in table order (``Method.rank``, then registration order)."""
    names = [name for name, cls in METHODS.items() if cls.task == "classification"]
    return sorted(names, key=lambda n: METHODS[n].rank)
