"""Checks of the rules' threshold dataclasses: one message shape, the argument and its value named."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def _check(owner: Any, names: tuple[str, ...], ok: Callable[[Any], bool], expected: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not ok(value):
            raise ValueError(f"`{name}` must be {expected}, got {value!r}.")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float))


def check_open_fraction(owner: Any, *names: str) -> None:
    """Each of ``names`` on ``owner`` is a number in (0, 1).

    Example:
        >>> from types import SimpleNamespace
        >>> check_open_fraction(SimpleNamespace(beta=1.0), "beta")
        Traceback (most recent call last):
        ValueError: `beta` must be in (0, 1), got 1.0.
    """
    _check(owner, names, lambda v: _number(v) and 0 < v < 1, "in (0, 1)")


def check_fraction(owner: Any, *names: str) -> None:
    """Each of ``names`` is a number in (0, 1]."""
    _check(owner, names, lambda v: _number(v) and 0 < v <= 1, "a fraction in (0, 1]")


def check_positive_number(owner: Any, *names: str) -> None:
    """Each of ``names`` is a finite number > 0."""
    _check(owner, names, lambda v: _number(v) and math.isfinite(v) and v > 0, "a finite number > 0")


def check_nonnegative_number(owner: Any, *names: str) -> None:
    """Each of ``names`` is a finite number >= 0."""
    _check(owner, names, lambda v: _number(v) and math.isfinite(v) and v >= 0, "a finite number >= 0")


def check_positive_int(owner: Any, *names: str) -> None:
    """Each of ``names`` is an int >= 1."""
    _check(owner, names, lambda v: isinstance(v, int) and v >= 1, "an int >= 1")
