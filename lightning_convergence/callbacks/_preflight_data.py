"""What the preflight reads off the first batches and the model's first output, as host numbers.

One pass over a few batches (host reads are fine here: this runs once, before training):
per batch part, the per-channel mean and root mean square of floating parts, NaN/Inf counts,
the range of integer parts and, for the integer target, the distinct labels in each batch; from
the model's output, the number of classes and whether its rows already sum to 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_convergence.callbacks.input_sanity_checker import looks_like_target
from lightning_convergence.rules.input_health import PartSummary
from lightning_convergence.stats.batch_tensors import batch_tensors


def summarize_batches(batches: list[Any]) -> tuple[list[PartSummary], list[int], Tensor | None]:
    """``(parts, distinct labels per batch, the first batch's integer target)``.

    Example:
        >>> x, y = torch.ones(4, 3) * 255, torch.tensor([0, 0, 0, 0])
        >>> parts, distinct, target = summarize_batches([(x, y), (x, y + 1)])
        >>> round(parts[0].rms[0]), distinct, parts[1].is_target
        (255, [1, 1], True)
    """
    by_path: dict[str, list[Tensor]] = {}
    targets: set[str] = set()
    for batch in batches:
        found, _ = batch_tensors(batch)
        for index, (path, tensor) in enumerate(found):
            by_path.setdefault(path, []).append(tensor.detach())
            if looks_like_target(path, index, len(found)):
                targets.add(path)
    parts, distinct, first_target = [], [], None
    for path, tensors in by_path.items():
        floating = tensors[0].is_floating_point() or tensors[0].dtype == torch.uint8
        part = PartSummary(path, floating, len(tensors), is_target=path in targets)
        if floating:
            _moments(part, tensors)
        elif tensors[0].dtype != torch.bool and tensors[0].numel():
            values = torch.cat([t.reshape(-1) for t in tensors]).long()
            part.low, part.high = float(values.min()), float(values.max())
            part.mean_batch_span = sum(float(t.max() - t.min()) for t in tensors if t.numel()) / len(tensors)
            if part.is_target and first_target is None:
                first_target = tensors[0]
                distinct = [int(torch.unique(t).numel()) for t in tensors]
        parts.append(part)
    return parts, distinct, first_target


def _moments(part: PartSummary, tensors: list[Tensor]) -> None:
    """Per-channel mean and RMS (channel: dimension 1 of 2-d and higher tensors) over the batches,
    ignoring NaN/Inf, which are counted."""
    rows = []
    for tensor in tensors:
        t = tensor.double()
        part.nonfinite += int((~torch.isfinite(t)).sum())
        rows.append(t.transpose(0, 1).reshape(t.shape[1], -1) if t.dim() >= 2 else t.reshape(1, -1))
    values = torch.cat(rows, dim=1)
    finite = torch.isfinite(values)
    count = finite.sum(dim=1).clamp(min=1)
    clean = torch.where(finite, values, torch.zeros_like(values))
    part.means = (clean.sum(dim=1) / count).tolist()
    part.rms = (clean.pow(2).sum(dim=1) / count).sqrt().tolist()


def class_dim(output: Tensor, target: Tensor | None) -> int | None:
    """The dimension of ``output`` that holds the classes for integer ``target`` labels:
    ``[N, K]``, ``[N, T, K]`` with labels ``[N, T]``, or ``[N, K, ...]`` with labels ``[N, ...]``;
    ``None`` when ``target`` is not a label tensor that fits.

    Example:
        >>> class_dim(torch.zeros(8, 10), torch.zeros(8, dtype=torch.long))
        1
        >>> class_dim(torch.zeros(8, 5, 100), torch.zeros(8, 5, dtype=torch.long))
        2
    """
    if target is None or target.is_floating_point() or output.dim() < 2:
        return None
    if output.dim() == 2 and target.dim() == 1 and target.shape[0] == output.shape[0]:
        return 1
    if tuple(target.shape) == tuple(output.shape[:-1]):
        return output.dim() - 1
    if tuple(target.shape) == (output.shape[0], *output.shape[2:]):
        return 1
    return None


def softmax_rows(output: Tensor, dim: int) -> bool:
    """Whether every row of ``output`` along ``dim`` is a probability vector (non-negative,
    summing to 1 within 1e-3): a softmax already applied.

    Example:
        >>> softmax_rows(torch.softmax(torch.randn(4, 10), dim=1), 1), softmax_rows(torch.randn(4, 10), 1)
        (True, False)
    """
    out = output.detach().float()
    if out.numel() == 0 or output.shape[dim] < 2 or not bool(torch.isfinite(out).all()):
        return False
    return bool(out.min() >= 0) and bool((out.sum(dim=dim) - 1).abs().max() < 1e-3)
