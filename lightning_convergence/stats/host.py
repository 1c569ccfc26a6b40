"""The one place where a per-step value is read on the host: for CPU tensors only.

On a CUDA device, reading a value forces the host to wait for the device (a sync), so per-step
code never does it. A CPU tensor is already in host memory: reading it is free, and it lets a
per-step path skip work (for example, scaling every gradient by exactly 1). Such reads go through
:func:`cpu_scalar`, which refuses any other device, so a path that reads on CPU provably cannot
sync on CUDA; the no-sync tests allow exactly this function.
"""

from __future__ import annotations

from torch import Tensor


def cpu_scalar(value: Tensor) -> float:
    """The value of a 0-d CPU tensor.

    Raises:
        ValueError: ``value`` is not on the CPU (reading it would sync with its device).

    Example:
        >>> import torch
        >>> cpu_scalar(torch.tensor(0.5))
        0.5
    """
    if value.device.type != "cpu":
        raise ValueError(f"`cpu_scalar` reads CPU tensors only, got one on {value.device}.")
    return value.item()
