"""How a method declares a hyper-parameter: one default, a type check, a CLI flag and a search distribution per
hyper-parameter family (``features``: a head on embeddings; ``image`` / ``text``: end-to-end fine-tuning).

The sweep registry (``memaware.sweep.hparams``), ``memaware train``'s flags, the runner and the scikit-learn
estimators all read these declarations; nothing else lists a method's hyper-parameters.

A distribution draws from a numpy ``Generator`` that the sweep seeds per (method, family, combination), in the order
the method declares its hyper-parameters; combination 0 is each distribution's ``comb0`` value (the defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..lazy import lazy_module

np = lazy_module("numpy")  # the command line reads declarations without numpy (~0.1 s); draws import it

FAMILIES = ("features", "image", "text")


class Distribution:
    """A search distribution. ``draw(rng, hp)`` may read already drawn values ``hp`` (e.g. the epoch budget)."""

    def comb0(self, default: Any, hp: dict[str, Any]) -> Any:
        return default

    def draw(self, rng: np.random.Generator, hp: dict[str, Any]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class LogUniform(Distribution):
    """10 ** U(lo, hi)."""

    lo: float
    hi: float

    def draw(self, rng: np.random.Generator, hp: dict[str, Any]) -> float:
        return float(10 ** rng.uniform(self.lo, self.hi))


@dataclass(frozen=True)
class Choice(Distribution):
    """One of ``values``, uniformly."""

    values: tuple[Any, ...]

    def draw(self, rng: np.random.Generator, hp: dict[str, Any]) -> Any:
        value = rng.choice(self.values)
        return type(self.values[0])(value)


@dataclass(frozen=True)
class EpochFraction(Distribution):
    """An epoch count as a fraction f of the run's ``epochs``: f = 10 ** U(log10 lo, log10 hi) (comb 0: ``first``);
    the result is clipped to 1 .. epochs - 1 (JTT's T)."""

    lo: float
    hi: float
    first: float

    def _epochs(self, f: float, hp: dict[str, Any]) -> int:
        return max(1, min(int(hp["epochs"]) - 1, round(int(hp["epochs"]) * f)))

    def comb0(self, default: Any, hp: dict[str, Any]) -> int:
        return self._epochs(self.first, hp)

    def draw(self, rng: np.random.Generator, hp: dict[str, Any]) -> int:
        return self._epochs(float(10 ** rng.uniform(np.log10(self.lo), np.log10(self.hi))), hp)


@dataclass(frozen=True)
class HParam:
    """One hyper-parameter of a method.

    ``search`` maps a family (or ``"*"`` for every family) to its distribution; a family without one keeps the
    default. ``sweep_default`` replaces the default as combination 0 of a sweep (e.g. JTT's lambda_up as an int).
    ``flag`` is the ``memaware train`` option (default ``--<name with dashes>``); ``low`` / ``choices`` check values.
    """

    default: Any
    help: str
    search: dict[str, Distribution] = field(default_factory=dict)
    flag: str | None = None
    low: float | None = None
    low_inclusive: bool = False
    choices: tuple[Any, ...] | None = None
    sweep_default: Any = None

    @property
    def kind(self) -> type:
        return type(self.default)

    def distribution(self, family: str) -> Distribution | None:
        return self.search.get(family, self.search.get("*"))

    def check(self, method: str, name: str, value: Any) -> Any:
        """Returns ``value`` converted to the declared type, or raises ``ConfigError`` naming method, name, value."""
        kind = self.kind
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{method} {name} must be true or false, got {value!r}")
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{method} {name} must be a number, got {value!r}")
        if kind in (int, float) and not math.isfinite(value):
            raise ConfigError(f"{method} {name} must be a finite number, got {value!r}")
        if kind is int and float(value) != int(value):
            raise ConfigError(f"{method} {name} must be an integer, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ConfigError(f"{method} {name} must be a string, got {value!r}")
        value = kind(value) if kind in (int, float) else value
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{method} {name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.low is not None:
            ok = value >= self.low if self.low_inclusive else value > self.low
            if not ok:
                sign = ">=" if self.low_inclusive else ">"
                raise ConfigError(f"{method} {name} must be {sign} {self.low:g}, got {value!r}")
        return value

    def cli_flag(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")
