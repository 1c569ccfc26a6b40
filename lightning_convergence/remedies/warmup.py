"""Learning-rate warmup factors.

References:
    Ma, Yarats, "On the adequacy of untuned warmup for adaptive optimization", AAAI 2021:
    for Adam, a linear warmup over ``2 / (1 - beta2)`` steps (exponential: time constant
    ``1 / (1 - beta2)``) needs no tuning.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Shape = Literal["linear", "exponential", "cosine"]
SHAPES: tuple[str, ...] = ("linear", "exponential", "cosine")


def warmup_factor(shape: Shape, step: int, period: int) -> float:
    """The factor for the ``step``-th optimizer step (0-based) of a warmup over ``period`` steps.

    The first step already gets ``1/period`` (linear), as in the ``pytorch-warmup`` package; a
    period of 0 means no warmup.

    Example:
        >>> [warmup_factor("linear", t, 4) for t in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
        >>> round(warmup_factor("cosine", 1, 4), 3)
        0.5
    """
    if period <= 0:
        return 1.0
    progress = (step + 1) / period
    if shape == "linear":
        return min(1.0, progress)
    if shape == "exponential":
        return 1.0 - math.exp(-progress)
    if shape == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"`shape` must be one of {SHAPES}, got {shape!r}.")


def untuned_period(optimizer: torch.optim.Optimizer, shape: Shape, group: int = 0) -> int:
    """Ma & Yarats' untuned warmup period from the optimizer's ``beta2``.

    Raises:
        ValueError: the optimizer has no ``betas`` (not Adam-family).
    """
    betas = optimizer.param_groups[group].get("betas")
    if betas is None:
        raise ValueError(
            f"`warmup_steps='untuned'` needs an Adam-family optimizer (with `betas`), got "
            f"{type(optimizer).__name__}."
        )
    beta2 = float(betas[1])
    return int((1.0 if shape == "exponential" else 2.0) / (1.0 - beta2))
