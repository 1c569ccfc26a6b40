"""Flags for optional dependencies, checked once and without importing them.

Optional packages are imported lazily where they are used; the error for a missing one says
what to ``pip install``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

_TRITON_AVAILABLE: bool = importlib.util.find_spec("triton") is not None
_MATPLOTLIB_AVAILABLE: bool = importlib.util.find_spec("matplotlib") is not None


def triton_interpret_mode() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def require_triton() -> None:
    """Raise a clear error when Triton is not installed."""
    if not _TRITON_AVAILABLE:
        raise ModuleNotFoundError(
            "The `triton` statistics backend needs Triton: `pip install 'lightning-convergence[triton]'`."
        )


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first use of
    ``name`` and caches it in ``namespace``, so that importing a package stays cheap (the command
    line's ``--help`` and reading a report back need no torch)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
