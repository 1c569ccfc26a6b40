"""The suite's Lightning callbacks: thin adapters from hooks to statistics, rules and remedies.

Every callback is listed once, in :mod:`lightning_convergence.callbacks.registry`; the names here
are loaded from it on first use, so that importing the registry does not import torch.
"""

from __future__ import annotations

from lightning_convergence._imports import lazy_exports
from lightning_convergence.callbacks.registry import ALIASES, CALLBACKS

_EXPORTS = {
    **{entry.name: entry.module for entry in CALLBACKS},
    **{alias: module for alias, (module, _) in ALIASES.items()},
    "ConvergenceCallback": "lightning_convergence.callbacks.base",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("lightning_convergence.callbacks", _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
