"""Reducing per-tensor statistics to per-layer (group) statistics and norms, on the device."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_convergence.stats.tensor_stats import ABSMAX, NONFINITE, SUMSQ


def sum_by_group(values: Tensor, group_index: Tensor, num_groups: int) -> Tensor:
    """Sum the last dimension of ``values`` ``[..., N]`` into groups: ``[..., G]``, on the device.

    Example:
        >>> import torch
        >>> sum_by_group(torch.tensor([1.0, 3.0, 4.0]), torch.tensor([0, 0, 1]), 2).tolist()
        [4.0, 4.0]
    """
    out = values.new_zeros(*values.shape[:-1], num_groups)
    out.index_add_(values.dim() - 1, group_index.to(values.device), values)
    return out


def reduce_by_group(stats: Tensor, group_index: Tensor, num_groups: int) -> Tensor:
    """Combine per-tensor rows ``[N, 3]`` into per-group rows ``[G, 3]``.

    Sums of squares and non-finite counts add up; max |x| takes the maximum (NaN propagates).

    Args:
        stats: per-tensor statistics from :func:`~lightning_convergence.stats.tensor_stats`.
        group_index: long tensor ``[N]`` with the group of each row, on the same device.
        num_groups: number of groups ``G``.

    Example:
        >>> import torch
        >>> rows = torch.tensor([[1.0, 1.0, 0.0], [3.0, 2.0, 0.0], [4.0, 5.0, 1.0]])
        >>> reduce_by_group(rows, torch.tensor([0, 0, 1]), 2).tolist()
        [[4.0, 2.0, 0.0], [4.0, 5.0, 1.0]]
    """
    out = torch.zeros(num_groups, 3, dtype=stats.dtype, device=stats.device)
    out[:, SUMSQ] = sum_by_group(stats[:, SUMSQ], group_index, num_groups)
    out[:, NONFINITE] = sum_by_group(stats[:, NONFINITE], group_index, num_groups)
    # scatter_reduce's amax skips NaN on some builds; add NaN back from the sums of squares.
    absmax = out[:, ABSMAX].scatter_reduce(0, group_index, stats[:, ABSMAX], reduce="amax")
    has_nan = sum_by_group(torch.isnan(stats[:, ABSMAX]).to(stats.dtype), group_index, num_groups)
    out[:, ABSMAX] = torch.where(has_nan > 0, torch.nan, absmax)
    return out


def reference_reduce_by_group(stats: Tensor, group_index: Tensor, num_groups: int) -> Tensor:
    """Obvious loop version of :func:`reduce_by_group`, the spec for tests."""
    out = torch.zeros(num_groups, 3, dtype=stats.dtype)
    for row, group in zip(stats.tolist(), group_index.tolist()):
        out[group, SUMSQ] += row[SUMSQ]
        out[group, NONFINITE] += row[NONFINITE]
        current = out[group, ABSMAX].item()
        if row[ABSMAX] != row[ABSMAX] or current != current:
            out[group, ABSMAX] = float("nan")
        else:
            out[group, ABSMAX] = max(current, row[ABSMAX])
    return out
