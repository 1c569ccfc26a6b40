"""Statistics of sharded tensors (DTensor, as FSDP2 and tensor parallelism make them): each rank
measures its local shard, and one sum over the ranks gives the global value.

A DTensor's placements say how its values are spread over a device mesh: ``Shard(d)`` splits
dimension ``d`` across a mesh dimension, ``Replicate()`` keeps a full copy on each rank of it.
A sum of squares adds up over shards but must count each replica once, so each rank's local value
is weighted by ``1 / copies``, where ``copies`` is the product of the sizes of the mesh dimensions
on which the tensor is replicated, times ``world_size / mesh.size()`` when the mesh covers only
part of the ranks (a module sharded on the data-parallel sub-mesh of a 2-D mesh is held once per
other coordinate). A plain tensor in a sharded run is taken as replicated on every rank.

Nothing here calls a collective by itself: the caller passes ``all_reduce`` (a function that sums
a tensor over every rank in place and returns it), so this module stays free of process groups
and of Lightning. Every function that takes ``all_reduce`` makes exactly one call to it; every
rank must call such a function at the same point, with tensors of the same shape.

References:
    PyTorch, "torch.distributed.tensor" (DTensor placements ``Shard``, ``Replicate``, ``Partial``)
    and "torch.distributed.fsdp.fully_shard" (FSDP2: parameters and gradients as ``Shard(0)``
    DTensors), https://pytorch.org/docs/stable/distributed.tensor.html.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lightning_convergence.stats.tensor_stats import ABSMAX, NONFINITE, SUMSQ

SumOverRanks = Callable[[Tensor], Tensor]
"""``all_reduce(tensor)``: ``tensor`` summed over every rank (in place), returned."""


@functools.lru_cache(maxsize=None)
def _dtensor_type() -> type | None:
    # Cached: asked for every gradient of every step, and the answer never changes in a process.
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def is_dtensor(tensor: object) -> bool:
    """Whether ``tensor`` is a DTensor (a tensor spread over a device mesh).

    Example:
        >>> import torch
        >>> is_dtensor(torch.ones(2)), is_dtensor(None)
        (False, False)
    """
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def local_view(tensor: Tensor | None) -> Tensor | None:
    """The values this rank holds: a DTensor's local shard (no copy, no communication), or the
    tensor itself.

    Raises:
        ValueError: a DTensor with a ``Partial`` placement (pending sums: its local values are
            not a shard of the tensor, and their squares do not add up to its norm).

    Example:
        >>> import torch
        >>> local_view(torch.ones(2)).tolist(), local_view(None)
        ([1.0, 1.0], None)
    """
    if tensor is None or not is_dtensor(tensor):
        return tensor
    if any(placement.is_partial() for placement in tensor.placements):
        raise ValueError(f"A DTensor with placements {tuple(tensor.placements)} holds partial sums: its local "
                         "values are not a shard, so its norm cannot be read without a redistribute.")
    return tensor.to_local()


def copies(tensor: Tensor | None, world_size: int) -> int:
    """How many ranks hold each value of ``tensor`` (see the module docstring).

    Example:
        >>> import torch
        >>> copies(torch.ones(2), world_size=4)
        4
    """
    if tensor is None or not is_dtensor(tensor):
        return world_size
    mesh = tensor.device_mesh
    replicated = math.prod(mesh.size(dim) for dim, p in enumerate(tensor.placements) if p.is_replicate())
    outside = max(world_size // mesh.size(), 1)  # copies of the whole mesh over the other ranks
    return replicated * outside


def replication_weights(tensors: Sequence[Tensor | None], world_size: int, device: torch.device) -> Tensor:
    """``1 / copies`` per tensor, float32 ``[len(tensors)]`` on ``device``.

    Example:
        >>> import torch
        >>> replication_weights([torch.ones(2), None], 2, torch.device("cpu")).tolist()
        [0.5, 0.5]
    """
    return torch.tensor([1.0 / copies(t, world_size) for t in tensors], dtype=torch.float32, device=device)


def reduce_sum_of_squares(local: Tensor, weights: Tensor, all_reduce: SumOverRanks) -> Tensor:
    """Global per-tensor sums of squares ``[N]`` from each rank's local ones, in one collective.

    Args:
        local: this rank's sums of squares of its shards, float32 ``[N]``.
        weights: :func:`replication_weights` of the same tensors.
        all_reduce: sums over every rank (one call).

    Example:
        >>> import torch
        >>> reduce_sum_of_squares(torch.tensor([4.0, 2.0]), torch.tensor([1.0, 0.5]), lambda t: t).tolist()
        [4.0, 1.0]
    """
    return all_reduce(local * weights)  # NaN/Inf of any rank propagate through the sum


def reduce_tensor_stats(local: Tensor, weights: Tensor, all_reduce: SumOverRanks, rank: int, world_size: int,
                        count_nonfinite: bool = False) -> Tensor:
    """Global per-tensor ``[sum of squares, max |x|, non-finite]`` ``[N, 3]`` in one collective SUM.

    The buffer holds the weighted sums of squares and non-finite values ``[2N]``, then a
    ``[world_size, N]`` block where this rank writes its max |x| in its own row and zeros
    elsewhere: the sum hands every rank every rank's maxima, and the max over ranks is taken
    locally. So no MAX collective is needed (gloo's MAX drops a NaN held by another rank), and a
    NaN of any rank propagates as in :func:`~lightning_convergence.stats.tensor_stats`. The block
    costs ``world_size * N`` floats, on logging steps only.

    Args:
        local: this rank's :func:`~lightning_convergence.stats.tensor_stats` of its shards.
        weights: :func:`replication_weights` of the same tensors.
        all_reduce: sums over every rank (one call).
        rank: this rank's index in ``[0, world_size)``.
        world_size: the number of ranks ``all_reduce`` sums over.
        count_nonfinite: whether ``local``'s last column counts values (exact global counts come
            back) or flags tensors (1.0 where any rank's shard holds NaN/Inf comes back).

    Example:
        >>> import torch
        >>> rows = torch.tensor([[9.0, 3.0, 0.0]])
        >>> reduce_tensor_stats(rows, torch.ones(1), lambda t: t, rank=0, world_size=1).tolist()
        [[9.0, 3.0, 0.0]]
    """
    n = local.shape[0]
    maxima = local.new_zeros(world_size, n)  # [world, N]
    maxima[rank] = local[:, ABSMAX]
    buffer = torch.cat([local[:, SUMSQ] * weights, local[:, NONFINITE] * weights, maxima.reshape(-1)])
    reduced = all_reduce(buffer)
    out = torch.empty_like(local)
    out[:, SUMSQ] = reduced[:n]
    nonfinite = reduced[n:2 * n]
    out[:, NONFINITE] = nonfinite if count_nonfinite else (nonfinite > 0).to(local.dtype)
    out[:, ABSMAX] = reduced[2 * n:].reshape(world_size, n).amax(dim=0)  # amax propagates NaN
    return out
