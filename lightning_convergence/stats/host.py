"""The one place where a per-step value is read on the host: for CPU tensors only.

On a CUDA device, reading a value forces the host to wait for the device (a sync), so per-step
code never does it. A CPU tensor is already in host memory: reading it is free, and it lets a
per-step path skip work (for example, scaling every gradient by exactly 1). Such reads go through
:func:`cpu_scalar` and :func:`cpu_floats`, which refuse any other device, so a path that reads on
CPU provably cannot sync on CUDA; the no-sync tests allow exactly these functions.

The host path. On a CPU each small torch operation costs 3 to 10 us of dispatch, whatever its
size, and a Python float operation about 0.05 us. So the per-step scalar bookkeeping (a spike
test, an EMA, a window of counters) runs on Python floats when the gradients live on the CPU
(:func:`on_host_path`), and on 0-d tensors (``where``/``clamp``, no read) on an accelerator. The
two paths compute the same values and are tested against each other; :data:`HOST_PATH_ON_CPU`
turns the host path off, for those tests and for a user who wants the device path everywhere.
"""

from __future__ import annotations

from torch import Tensor

HOST_PATH_ON_CPU = True
"""Run the per-step scalar bookkeeping on Python floats when the tensors are on the CPU."""


def on_host_path(value: Tensor) -> bool:
    """Whether per-step code for ``value`` takes the host path (a CPU tensor, and the host path on).

    Example:
        >>> import torch
        >>> on_host_path(torch.zeros(3))
        True
    """
    return HOST_PATH_ON_CPU and value.device.type == "cpu"


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


def cpu_floats(values: Tensor) -> list[float]:
    """The values of a CPU tensor, flattened, as Python floats.

    Raises:
        ValueError: ``values`` is not on the CPU (reading it would sync with its device).

    Example:
        >>> import torch
        >>> cpu_floats(torch.tensor([[1.0, 2.0]]))
        [1.0, 2.0]
    """
    if values.device.type != "cpu":
        raise ValueError(f"`cpu_floats` reads CPU tensors only, got one on {values.device}.")
    return values.reshape(-1).tolist()
