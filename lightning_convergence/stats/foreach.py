"""Fast statistics with torch's multi-tensor (``_foreach``) kernels.

On CUDA ``torch._foreach_norm`` is one fused launch per chunk of tensors; on CPU it is a loop in
C++. ``_foreach_norm(ord=inf)`` on CPU first materialises ``abs()`` (about 10x slower than
``aminmax`` there), so the CPU path takes ``aminmax`` per tensor instead.

Each function here takes tensors that share one device and one dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_convergence.stats.host import cpu_sums_of_squares


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision sums of squares overflow at 65504; accumulate and return in float32.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _powsum(tensors: Sequence[Tensor], acc: torch.dtype) -> list[Tensor]:
    powsum = getattr(torch, "_foreach_powsum", None)  # private; present in torch 2.13
    if powsum is not None:
        return list(powsum(list(tensors), 2.0, dtype=acc))
    # Older torch: square the norms (a rounding step more, same NaN/Inf behaviour).
    return [n * n for n in torch._foreach_norm(list(tensors), 2.0, dtype=acc)]


def foreach_sum_of_squares(tensors: Sequence[Tensor]) -> Tensor:
    """Per-tensor sum of squares as float32, shape ``[len(tensors)]``; NaN/Inf propagate."""
    if tensors[0].device.type == "cpu" and tensors[0].dtype in (torch.float32, torch.float64):
        # One BLAS dot per tensor (see ``cpu_sums_of_squares``); packing the floats costs one op.
        values = cpu_sums_of_squares(tensors, tensors[0].dtype)  # never None: one dense CPU group
        return torch.tensor(values, dtype=torch.float32)  # [N]
    acc = _accumulate_dtype(tensors[0].dtype)
    return torch.stack(_powsum(tensors, acc)).to(torch.float32)  # [N]


def _absmax_cpu(tensors: Sequence[Tensor]) -> Tensor:
    # One aminmax per tensor, then the |.| and the max of all of them at once: on the CPU each
    # small op costs microseconds, as much as reading a small tensor.
    empty = torch.zeros((), dtype=tensors[0].dtype)
    lows, highs = [], []
    for tensor in tensors:
        low, high = torch.aminmax(tensor) if tensor.numel() else (empty, empty)  # both propagate NaN
        lows.append(low)
        highs.append(high)
    return torch.maximum(torch.stack(lows).abs(), torch.stack(highs).abs()).to(torch.float32)


def foreach_absmax(tensors: Sequence[Tensor]) -> Tensor:
    """Per-tensor ``max |x|`` as float32, shape ``[len(tensors)]``; NaN/Inf propagate."""
    if tensors[0].device.type == "cpu":
        return _absmax_cpu(tensors)
    acc = _accumulate_dtype(tensors[0].dtype)
    norms = torch._foreach_norm(list(tensors), float("inf"), dtype=acc)
    return torch.stack(norms).to(torch.float32)


def foreach_nonfinite_count(tensors: Sequence[Tensor]) -> Tensor:
    """Per-tensor count of NaN/Inf values as float32, shape ``[len(tensors)]``.

    ``x * 0`` is zero for every finite ``x`` and NaN for NaN and +-Inf, and ``count_nonzero``
    counts NaN, so one multiply and one count give the exact number without a boolean mask.
    """
    counts = [torch.count_nonzero(tensor * 0) for tensor in tensors]
    return torch.stack(counts).to(torch.float32)


def foreach_tensor_stats(tensors: Sequence[Tensor], count_nonfinite: bool = True) -> Tensor:
    """Per-tensor ``[sum of squares, max |x|, non-finite count]``, float32 ``[N, 3]``.

    With ``count_nonfinite=False`` the last column is 1.0 where a tensor holds any NaN/Inf and
    0.0 elsewhere, read off max |x| (which is non-finite exactly then) at no extra pass.
    """
    sumsq = foreach_sum_of_squares(tensors)
    absmax = foreach_absmax(tensors)
    if count_nonfinite:
        nonfinite = foreach_nonfinite_count(tensors)
    else:
        nonfinite = (~torch.isfinite(absmax)).to(torch.float32)
    return torch.stack([sumsq, absmax, nonfinite], dim=1)
