"""Adaptive gradient clipping (AGC) of sharded parameters (DTensors: FSDP2, tensor parallelism),
on local shards, with one sum over the ranks per step.

A unit is an output row (all dimensions but the first). Where a tensor's rows are whole on each
rank (a matrix split along dimension 0, as FSDP2 does, or a tensor not split at all), each rank
clips its own rows: no communication. A tensor whose unit is the whole tensor (0-d and 1-d
tensors: biases, norms' scales) split over ranks needs its global norms: those of every such
tensor go into one all_reduce(SUM), with the counts of clipped rows, weighted so that each replica
counts once.

References:
    Brock, De, Smith, Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization" (NFNets; adaptive gradient clipping), ICML 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_convergence.remedies.clipping import unitwise_norm
from lightning_convergence.stats.sharding import SumOverRanks, is_dtensor, local_view

_NORM_EPS = 1e-6  # as clipping.adaptive_clip_


def rows_split(param: Tensor) -> int | None:
    """The dimension >= 1 along which a matrix DTensor is split (its units' rows are spread over
    ranks), or ``None`` when every unit is whole on one rank or is the whole tensor.

    Example:
        >>> import torch
        >>> rows_split(torch.ones(3, 2)) is None
        True
    """
    if not is_dtensor(param) or param.ndim <= 1:
        return None
    for placement in param.placements:
        if placement.is_shard() and placement.dim % param.ndim != 0:
            return placement.dim % param.ndim
    return None


def _whole_tensor_unit(param: Tensor) -> bool:
    # A 0-d/1-d tensor is one unit (unitwise_norm): split over ranks, its norm needs them all.
    return param.ndim <= 1 and is_dtensor(param) and any(p.is_shard() for p in param.placements)


@torch.no_grad()
def sharded_adaptive_clip_(params: Sequence[torch.nn.Parameter], clip_factor: float, eps: float,
                           weights: Tensor, all_reduce: SumOverRanks) -> Tensor:
    """AGC of sharded parameters, in place on the local shards; the fraction of units clipped.

    Every rank must call it at the same step with the same parameters (one collective).

    Args:
        params: the parameters (DTensors or plain tensors, the latter taken as replicated).
        clip_factor: ratio of gradient norm to weight norm allowed per unit.
        eps: least weight norm a unit is credited with.
        weights: ``1 / copies`` per parameter (``stats.sharding.replication_weights``), ``[N]``.
        all_reduce: sums a tensor over every rank (called once).

    Raises:
        ValueError: a matrix split along a dimension other than 0 (its rows span ranks).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 1)
        >>> layer.weight.grad, layer.bias.grad = torch.full((1, 2), 100.0), torch.zeros(1)
        >>> fraction = sharded_adaptive_clip_([layer.weight, layer.bias], 0.01, 1e-3, torch.ones(2), lambda t: t)
        >>> round(fraction.item(), 2)
        0.5
    """
    whole: list[int] = []  # indices of parameters whose single unit is spread over ranks
    clipped_rows, rows = [], []
    device = weights.device
    for i, param in enumerate(params):
        if param.grad is None or param.grad.layout != torch.strided:
            continue
        split = rows_split(param)
        if split is not None:
            raise ValueError(f"AGC clips output rows; a parameter of shape {tuple(param.shape)} is split along "
                             f"dimension {split}, so its rows span ranks.")
        if _whole_tensor_unit(param):
            whole.append(i)
            continue
        weight, grad = local_view(param.detach()), local_view(param.grad)
        if weight.numel() == 0:
            continue  # this rank holds no rows of it (uneven shards)
        limit = unitwise_norm(weight).clamp(min=eps) * clip_factor
        grad_norm = unitwise_norm(grad)
        over = grad_norm > limit
        grad.mul_(torch.where(over, limit / grad_norm.clamp(min=_NORM_EPS), 1.0).to(grad.dtype))
        clipped_rows.append(over.sum().to(device, torch.float32) * weights[i])
        rows.append(torch.tensor(float(over.numel()), device=device) * weights[i])
    w_sq = [local_view(params[i].detach()).float().square().sum().to(device) for i in whole]
    g_sq = [local_view(params[i].grad).float().square().sum().to(device) for i in whole]
    index = torch.tensor(whole, dtype=torch.long, device=device)
    local_counts = torch.stack([sum(clipped_rows, torch.zeros((), device=device)),
                                sum(rows, torch.zeros((), device=device))])
    scaled = torch.cat([torch.stack(w_sq + g_sq).reshape(2, -1) * weights[index] if whole
                        else torch.zeros(2, 0, device=device), local_counts.reshape(2, 1)], dim=1)  # [2, W+1]
    reduced = all_reduce(scaled.reshape(-1)).reshape(2, -1)  # collective: one all_reduce(SUM)
    weight_norm, grad_norm = reduced[0, :-1].sqrt(), reduced[1, :-1].sqrt()  # [W], the same on every rank
    limit = weight_norm.clamp(min=eps) * clip_factor
    over = grad_norm > limit
    coefficient = torch.where(over, limit / grad_norm.clamp(min=_NORM_EPS), 1.0)
    for j, i in enumerate(whole):
        grad = local_view(params[i].grad)
        grad.mul_(coefficient[j].to(grad.dtype))
    clipped = reduced[0, -1] + over.sum()
    units = reduced[1, -1] + len(whole)
    return (clipped / units.clamp(min=1)).to(torch.float32)
