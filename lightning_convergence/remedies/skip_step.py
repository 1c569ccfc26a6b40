"""Skipping an optimizer step whose gradients are not finite.

Under bf16/fp32 one non-finite step poisons the weights for good. Zeroing the gradients is not a
skip: momentum and AdamW's weight decay still move the weights. Setting every ``p.grad = None``
makes torch's optimizers leave those parameters and their state untouched for this step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def drop_gradients(params: Iterable[torch.nn.Parameter]) -> int:
    """Set ``p.grad = None`` for every parameter; return how many had a gradient.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 1)
        >>> layer(torch.ones(1, 2)).sum().backward()
        >>> drop_gradients(layer.parameters()), layer.weight.grad is None
        (2, True)
    """
    dropped = 0
    for param in params:
        if param.grad is not None:
            param.grad = None
            dropped += 1
    return dropped
