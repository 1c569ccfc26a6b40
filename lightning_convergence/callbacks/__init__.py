"""The suite's Lightning callbacks: thin adapters from hooks to statistics, rules and remedies.

Every callback is listed once, in :mod:`lightning_convergence.callbacks.registry`; the names here
are loaded from it on first use, so that importing the registry does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_convergence.callbacks.registry import CALLBACKS

_EXPORTS = {
    **{entry.name: entry.module for entry in CALLBACKS},
    "ConvergenceCallback": "lightning_convergence.callbacks.base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_convergence.callbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
