"""Detection rules: trainer-free, fed numbers, small state, return findings."""

from lightning_convergence.rules.gradient_health import GradientHealthRule, GradientThresholds
from lightning_convergence.rules.gradient_window import GradientWindow, SpikeDetector, WindowSummary

__all__ = ["GradientHealthRule", "GradientThresholds", "GradientWindow", "SpikeDetector", "WindowSummary"]
