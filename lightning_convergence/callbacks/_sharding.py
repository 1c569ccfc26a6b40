"""The suite's view of sharded parameters (FSDP2, tensor parallelism): which parameters are
DTensors, the weights that count each replica once, the one sum over ranks, and what a strategy
must offer for the suite to read its gradients.

The statistics themselves are in :mod:`lightning_convergence.stats.sharding`; this module binds
them to the Trainer's process group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from lightning_convergence.stats.sharding import (is_dtensor, local_view, reduce_sum_of_squares,
                                                  reduce_tensor_stats, replication_weights)


def world_sum(tensor: Tensor) -> Tensor:
    """``tensor`` summed over every rank, in place: ONE ``all_reduce(SUM)`` on the default group.

    Called directly rather than through ``trainer.strategy.reduce``: Lightning's reduce puts a
    ``barrier`` before the all_reduce (a second collective, and a device sync under NCCL). Every
    rank must call it at the same point, with a tensor of the same shape.
    """
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


@dataclass(frozen=True)
class ShardLayout:
    """How one optimizer's parameters are spread over the ranks, fixed once the model is sharded.

    Args:
        weights: ``1 / copies`` per parameter, float32 ``[N]`` on the parameters' device.
        rank: this process's global rank.
        world_size: the number of processes.
    """

    weights: Tensor
    rank: int
    world_size: int

    @staticmethod
    def of(trainer: Trainer, params: list[Tensor]) -> "ShardLayout | None":
        """The layout of ``params``, or ``None`` when none is a DTensor (a single process, or DDP,
        where every rank holds the same full gradients and no reduce is needed). DTensors in a
        single process still get a layout: their statistics must be taken on local tensors."""
        if not any(is_dtensor(p) for p in params):
            return None
        device = local_view(params[0]).device
        return ShardLayout(replication_weights(params, trainer.world_size, device),
                           trainer.global_rank, trainer.world_size)

    def sum_of_squares(self, local: Tensor) -> Tensor:
        """Global sums of squares ``[N]`` from this rank's: one collective (see :func:`world_sum`)."""
        return reduce_sum_of_squares(local, self.weights, world_sum)

    def tensor_stats(self, local: Tensor, count_nonfinite: bool = False) -> Tensor:
        """Global ``[N, 3]`` statistics from this rank's: one collective (see :func:`world_sum`)."""
        return reduce_tensor_stats(local, self.weights, world_sum, self.rank, self.world_size, count_nonfinite)


def local_gradients(params: list[Tensor]) -> list[Tensor | None]:
    """Each parameter's gradient as this rank holds it: the local shard of a DTensor gradient,
    else the gradient itself (``None`` stays ``None``). Views: writing into them writes the
    gradients."""
    return [local_view(p.grad) for p in params]


def unreadable_sharding(trainer: Trainer, pl_module: LightningModule) -> str | None:
    """Why this run's gradients cannot be measured globally by the suite, or ``None``.

    A capability check, not a list of strategy names: the suite reads a parameter that is a full
    tensor (the same on every rank, as under DDP) or a DTensor (it knows its placements). It cannot
    read parameters flattened into FSDP1's flat buffers (marked ``_fsdp_flattened`` by torch) or
    partitioned by DeepSpeed ZeRO (they carry ``ds_id``): their local pieces do not say which
    original tensor or rows they hold.
    """
    for name, param in pl_module.named_parameters():
        if getattr(param, "_fsdp_flattened", False):
            return (f"parameter {name!r} is a flat FSDP1 view (FSDPStrategy); use ModelParallelStrategy with "
                    "FSDP2 `fully_shard` in `configure_model`, or DDP")
        if hasattr(param, "ds_id"):
            return (f"parameter {name!r} is partitioned by DeepSpeed; use ModelParallelStrategy with FSDP2 "
                    "`fully_shard` in `configure_model`, or DDP")
    return None
