"""GradientNormMonitor's weight norms and update/weight ratios: a fixed random sample of each
weight tensor kept from before an update, compared with the same positions after it.

Under sharding (DTensor parameters) each rank samples its own local shard (no gather); the
sampled and exact sums of squares are merged over the ranks in one all_reduce(SUM), weighted so
that a replicated tensor counts once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_convergence.callbacks._sharding import ShardLayout
from lightning_convergence.stats import host_sum_of_squares, sum_by_group, sum_of_squares
from lightning_convergence.stats.sharding import local_view
from lightning_convergence.stats.weight_sample import sample_positions, values_at

SAMPLES = 4096  # values per weight tensor (per local shard under sharding)


@dataclass
class UpdateSample:
    """The sampled weights of one optimizer's parameters from before one step's update.

    Memory: the positions, drawn once (``SAMPLES`` longs, 32 KB, per tensor), and the sampled
    values (16 KB per tensor in float32), held from a logging step until the next batch.
    """

    values: list[Tensor] | None = None
    positions: list[Tensor | None] | None = None
    step: int = -1
    pending: bool = False

    @torch.no_grad()
    def take(self, params: list[torch.nn.Parameter], step: int) -> None:
        """Keep the sampled values of ``params`` (their local shards) as they are now."""
        local = _local_weights(params)
        if self.positions is None:
            self.positions = [sample_positions(p, SAMPLES, seed) for seed, p in enumerate(local)]
        self.values = [values_at(p, index) for p, index in zip(local, self.positions)]
        self.step, self.pending = step, True

    @torch.no_grad()
    def measure(self, params: list[torch.nn.Parameter], group_index: Tensor, num_groups: int, backend: str,
                layout: ShardLayout | None) -> tuple[list[float], list[float], list[float]]:
        """Per group: the exact squared weight norm, the sampled squared weight norm before the
        update and the sampled squared update, each sample scaled up to its tensor's size.

        Under sharding: one all_reduce(SUM) of ``[3, N]`` (every rank calls this at the same
        step: the caller's branch depends on the step only). A host read of ``[3, groups]``.
        """
        assert self.values is not None and self.positions is not None
        self.pending = False
        local = _local_weights(params)
        now: list[Tensor] = []
        positions = iter(self.positions)
        # On the host path each weight's sample is gathered right after its exact sum of squares,
        # from the cache that read filled; the values are those of the general path below.
        weight_floats = None if layout is not None else host_sum_of_squares(
            local, backend, then=lambda weight: now.append(values_at(weight, next(positions))))
        if weight_floats is None:
            now = [values_at(p, index) for p, index in zip(local, self.positions)]
            weight_sq = sum_of_squares(local, backend).double()
        else:  # (float32, as sum_of_squares packs the same floats)
            weight_sq = torch.tensor(weight_floats, dtype=torch.float32, device=group_index.device).double()
        scale = torch.tensor([p.numel() / max(s.numel(), 1) for p, s in zip(local, now)],
                             dtype=torch.float64, device=group_index.device)  # [params]
        before_sq = sum_of_squares(self.values, backend).double() * scale
        update_sq = sum_of_squares(torch._foreach_sub(self.values, now), backend).double() * scale
        rows = torch.stack([weight_sq, before_sq, update_sq])  # [3, params]
        if layout is not None:
            rows = layout.sum_of_squares(rows)  # collective: one all_reduce(SUM)
        self.values = None
        exact, sampled, change = sum_by_group(rows, group_index, num_groups).tolist()
        return exact, sampled, change

    def clear(self) -> None:
        """Free the sampled values (end of fit)."""
        self.values, self.pending = None, False


def _local_weights(params: list[torch.nn.Parameter]) -> list[Tensor]:
    # Read under no_grad (the callers' decorator) rather than a detach per tensor: on the CPU
    # each small op costs microseconds, and a model has hundreds of parameters.
    return [local_view(p) for p in params]
