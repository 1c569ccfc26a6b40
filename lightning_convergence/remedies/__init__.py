"""Actions that change training. Plain functions where possible; no Lightning."""

from lightning_convergence.remedies.clipping import (
    PercentileThreshold,
    ZScoreThreshold,
    adaptive_clip_,
    clip_coefficient,
    scale_gradients_,
    unitwise_norm,
)
from lightning_convergence.remedies.skip_step import drop_gradients

__all__ = [
    "PercentileThreshold",
    "ZScoreThreshold",
    "adaptive_clip_",
    "clip_coefficient",
    "drop_gradients",
    "scale_gradients_",
    "unitwise_norm",
]
