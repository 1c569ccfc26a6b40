"""Flags for optional dependencies, checked once and without importing them.

Optional packages are imported lazily where they are used; the error for a missing one says
what to ``pip install``.
"""

from __future__ import annotations

import importlib.util
import os

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
