"""Detection rules: trainer-free, fed numbers, small state, return findings.

The names below load on first use, so that reading a report back (``findings`` and ``advice``,
pure Python) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GradientHealthRule": "lightning_convergence.rules.gradient_health",
    "GradientThresholds": "lightning_convergence.rules.gradient_health",
    "GradientWindow": "lightning_convergence.rules.gradient_window",
    "SpikeDetector": "lightning_convergence.rules.gradient_window",
    "WindowSummary": "lightning_convergence.rules.gradient_window",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_convergence.rules' has no attribute {name!r}")
