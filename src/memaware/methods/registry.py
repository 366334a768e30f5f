"""Name -> method class. ``@register`` adds a class; ``make_method`` builds one from keyword hyper-parameters."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Method

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, **hparams: Any) -> Method:
    """Instantiates the registered method ``name`` with ``hparams`` (unknown names raise ``ConfigError``)."""
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}', choose from {', '.join(sorted(METHODS))}")
    return METHODS[name](**hparams)
