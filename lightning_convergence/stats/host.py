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

from collections.abc import Callable, Sequence

import torch
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


def cpu_sums_of_squares(tensors: Sequence[Tensor | None], dtype: torch.dtype = torch.float32,
                        then: Callable[[Tensor], object] | None = None) -> list[float] | None:
    """Per-tensor sum of squares of dense CPU tensors of ``dtype``, as Python floats.

    One BLAS dot product per tensor, read at once: the dot reads a tensor once, on all threads,
    and stays fast on values whose squares are subnormal (where ``_foreach_powsum`` slows down
    35x). Each value is the dot product in ``dtype``; NaN/Inf propagate. Reading the floats
    directly skips stacking 0-d results into a tensor and reading that back, which in a training
    step (gradients cold in cache) cost about 0.1 ms on 44 tensors (``benchmarks/step_ops.md``).

    Args:
        tensors: ``N`` tensors of any shape.
        dtype: the dtype every tensor must have (float32 or float64).
        then: called with each tensor right after its dot, while the tensor is in the cache the
            dot filled (a gather of sampled values from each weight after its dot took 1.7 ms
            against 2.35 ms for the two passes one after the other, on the 100 tensors of the
            overhead benchmark's MLP, cold).

    Returns:
        ``N`` floats; ``None`` (having read nothing of the rest) as soon as a tensor is missing,
        not on the CPU, not dense, or not of ``dtype``: a tensor on another device is never read.

    Example:
        >>> import torch
        >>> cpu_sums_of_squares([torch.tensor([3.0, 4.0]), torch.zeros(0)])
        [25.0, 0.0]
        >>> cpu_sums_of_squares([torch.tensor([3.0, 4.0]), None]) is None
        True
    """
    values: list[float] = []
    for tensor in tensors:  # a plain loop: the no-sync test recognises the reads by this frame's name
        if tensor is None or not tensor.is_cpu or tensor.dtype is not dtype or tensor.layout is not torch.strided:
            return None
        flat = tensor if tensor.dim() == 1 else tensor.reshape(-1)  # (a reshape is an op: biases need none)
        values.append(torch.dot(flat, flat).item())
        if then is not None:
            then(tensor)
    return values
