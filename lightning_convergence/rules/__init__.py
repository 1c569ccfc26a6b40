"""Detection rules: trainer-free, fed numbers, small state, return findings.

The names below load on first use, so that reading a report back (``findings`` and ``advice``,
pure Python) does not import torch.
"""

from __future__ import annotations

from lightning_convergence._imports import lazy_exports
_EXPORTS = {
    "GradientHealthRule": "lightning_convergence.rules.gradient_health",
    "GradientThresholds": "lightning_convergence.rules.gradient_health",
    "GradientWindow": "lightning_convergence.rules.gradient_window",
    "SpikeDetector": "lightning_convergence.rules.gradient_window",
    "WindowSummary": "lightning_convergence.rules.gradient_window",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("lightning_convergence.rules", _EXPORTS, globals())