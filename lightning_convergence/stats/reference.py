"""The reference statistics: an obvious per-tensor loop in float64. This is the spec.

Every fast backend must agree with these functions (see ``tests/stats``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def reference_tensor_stats(tensors: Sequence[Tensor], count_nonfinite: bool = True) -> Tensor:
    """Per-tensor ``[sum of squares, max |x|, count of non-finite values]``.

    Args:
        tensors: dense tensors of any floating dtype, on any device.
        count_nonfinite: count NaN/Inf values; ``False`` gives 1.0 for a tensor with any, else 0.0.

    Returns:
        A float32 tensor of shape ``[len(tensors), 3]`` on the device of the first tensor.
        NaN and Inf propagate into the sum of squares and max; an empty tensor gives zeros.

    Example:
        >>> import torch
        >>> reference_tensor_stats([torch.tensor([3.0, -4.0])]).tolist()
        [[25.0, 4.0, 0.0]]
    """
    rows = []
    for tensor in tensors:
        x = tensor.detach().reshape(-1).to(torch.float64)
        if x.numel() == 0:
            rows.append(torch.zeros(3, dtype=torch.float64, device=x.device))
            continue
        sumsq = (x * x).sum()
        absmax = x.abs().max()  # max propagates NaN
        nonfinite = (~torch.isfinite(x)).sum().to(torch.float64)
        if not count_nonfinite:
            nonfinite = (nonfinite > 0).to(torch.float64)
        rows.append(torch.stack([sumsq, absmax, nonfinite]))
    if not rows:
        return torch.zeros(0, 3)
    device = rows[0].device
    return torch.stack([row.to(device) for row in rows]).to(torch.float32)


def reference_sum_of_squares(tensors: Sequence[Tensor]) -> Tensor:
    """Per-tensor sum of squares (float32, shape ``[len(tensors)]``), computed in float64."""
    return reference_tensor_stats(tensors)[:, 0]
