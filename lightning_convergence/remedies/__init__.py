"""Actions that change training. Plain functions where possible; no Lightning."""

from lightning_convergence.remedies.skip_step import drop_gradients

__all__ = ["drop_gradients"]
