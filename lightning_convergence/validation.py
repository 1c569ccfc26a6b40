"""Argument checks shared by the callbacks and every ``*Thresholds``: one message shape, the
argument and its value named, builtin exceptions (``TypeError`` for a wrong type, ``ValueError``
for a value out of range). Finiteness is checked with :func:`math.isfinite` (NaN passes ``x < 0``),
and a bool is never taken for a number.

Each ``check_*`` takes ``(name, value)``; :func:`check_fields` applies one of them to several
fields of an object (a thresholds dataclass in its ``__post_init__``).

Example:
    >>> check_positive_int("patience", 0)
    Traceback (most recent call last):
    ValueError: `patience` must be an int >= 1, got 0.
    >>> check_fraction("dead_warning", float("nan"))
    Traceback (most recent call last):
    ValueError: `dead_warning` must be a fraction in (0, 1], got nan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def _int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {value!r}.")


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """``value`` is an int >= 1 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    _int(name, value)
    if value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")


def check_nonnegative_int(name: str, value: Any) -> None:
    """``value`` is an int >= 0."""
    _int(name, value)
    if value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")


def check_positive_float(name: str, value: Any, minimum: float = 0.0) -> None:
    """``value`` is a finite number greater than ``minimum``."""
    _number(name, value)
    if not math.isfinite(value) or value <= minimum:
        raise ValueError(f"`{name}` must be a finite number > {minimum}, got {value!r}.")


def check_nonnegative_float(name: str, value: Any) -> None:
    """``value`` is a finite number >= 0."""
    _number(name, value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")


def check_open_fraction(name: str, value: Any) -> None:
    """``value`` is a number in (0, 1)."""
    _number(name, value)
    if not 0 < value < 1:
        raise ValueError(f"`{name}` must be in (0, 1), got {value!r}.")


def check_fraction(name: str, value: Any) -> None:
    """``value`` is a number in (0, 1]."""
    _number(name, value)
    if not 0 < value <= 1:
        raise ValueError(f"`{name}` must be a fraction in (0, 1], got {value!r}.")


def check_bool(name: str, value: Any) -> None:
    """``value`` is a bool (not 0/1)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {value!r}.")


def check_fields(owner: Any, check: Callable[[str, Any], None], *names: str) -> None:
    """Apply ``check(name, getattr(owner, name))`` to each of ``names``.

    Example:
        >>> from types import SimpleNamespace
        >>> check_fields(SimpleNamespace(beta=1.0), check_open_fraction, "beta")
        Traceback (most recent call last):
        ValueError: `beta` must be in (0, 1), got 1.0.
    """
    for name in names:
        check(name, getattr(owner, name))
