"""Parameter constraints and data checks with one message format.

Selectors (and other configurable classes) declare ``_constraints = {"name": Constraint}``;
:func:`validate_params` checks them at call time and raises
``The 'x' parameter of Y must be <constraint>. Got <value> instead.`` (scikit-learn's format).
Checks that depend on the data (:func:`check_budget`) put the numbers in the message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from curation.exceptions import InvalidParameterError


class Constraint:
    """Accepts or rejects one parameter value; ``str()`` says what is allowed."""

    def accepts(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """A number in ``[low, high]`` (``closed`` picks which ends are included); None = unbounded."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"
    integer: bool = False
    allow_none: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        left_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        right_ok = self.high is None or (
            value <= self.high if self.closed in ("both", "right") else value < self.high
        )
        return left_ok and right_ok

    def __str__(self) -> str:
        kind = "an int" if self.integer else "a number"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        lb = "[" if self.closed in ("both", "left") and self.low is not None else "("
        rb = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        return f"{kind} in the range {lb}{lo}, {hi}{rb}" + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values."""

    values: frozenset

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", frozenset(values))

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in sorted(self.values, key=str))


@dataclass(frozen=True)
class TypeOf(Constraint):
    """An instance of the given type(s)."""

    types: tuple[type, ...]
    allow_none: bool = False

    def accepts(self, value: Any) -> bool:
        return (value is None and self.allow_none) or isinstance(value, self.types)

    def __str__(self) -> str:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        names = " or ".join(t.__name__ for t in types)
        return f"an instance of {names}" + (" or None" if self.allow_none else "")


def validate_params(obj: object) -> None:
    """Check every entry of ``type(obj)._constraints`` against the attribute of the same name."""
    for name, constraint in getattr(type(obj), "_constraints", {}).items():
        value = getattr(obj, name)
        if not constraint.accepts(value):
            raise InvalidParameterError(
                f"The {name!r} parameter of {type(obj).__name__} must be {constraint}. Got {value!r} instead."
            )


def check_budget(budget: int, n_samples: int) -> None:
    """A budget must be a positive int no larger than the pool."""
    if isinstance(budget, bool) or not isinstance(budget, (int,)) and not float(budget).is_integer():
        raise InvalidParameterError(f"budget must be an int; got {budget!r}.")
    if budget <= 0:
        raise InvalidParameterError(f"budget={budget} should be > 0. Set select.budget to a positive number of items.")
    if budget > n_samples:
        raise InvalidParameterError(
            f"budget={budget} should be <= n_samples={n_samples}. "
            f"The pool has only {n_samples} usable items; lower select.budget or add data."
        )
