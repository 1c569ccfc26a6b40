"""ReDo: give dead units fresh incoming weights and silence their outgoing ones.

For each unit to revive: its row of the producer's weight (and its bias) is drawn again from the
layer's default initialisation, a normalisation in between gets its identity affine and fresh
running statistics back, and the consumer's input columns for the unit are set to zero, so the
network computes the same function at that step and the unit starts learning again. The
optimizer's per-parameter state (Adam's moments, SGD's momentum) is reset for exactly those
rows and columns; a stale moment would otherwise push the fresh weights back at once.

New weights come from a private ``torch.Generator`` so that the global RNG is untouched and DDP
ranks, seeded alike, draw identical weights.

References:
    Sokar, Agarwal, Castro, Evci. "The Dormant Neuron Phenomenon in Deep Reinforcement
    Learning", ICML 2023.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_convergence.remedies.unit_wiring import UnitWiring


def default_init_rows(weight: Tensor, rows: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Fresh rows of a Linear/Conv weight and bias, as ``reset_parameters`` would draw them.

    torch's default for both layers is Kaiming-uniform with ``a = sqrt(5)`` (bound
    ``1/sqrt(fan_in)``) and a bias uniform in ``+-1/sqrt(fan_in)``.

    Example:
        >>> w, b = default_init_rows(torch.zeros(4, 3), torch.tensor([1, 2]), torch.Generator().manual_seed(0))
        >>> tuple(w.shape), tuple(b.shape), bool(w.abs().max() <= 1 / 3 ** 0.5)
        ((2, 3), (2,), True)
    """
    fan_in = weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    shape = (len(rows), *weight.shape[1:])
    # kaiming_uniform_(a=sqrt(5)) gives gain sqrt(2 / (1 + 5)) * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    new_weight = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    new_bias = (torch.rand(len(rows), generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return new_weight.to(weight.dtype), new_bias


def _reset_state(optimizers: Sequence[torch.optim.Optimizer], param: Tensor, index: tuple) -> None:
    """Zero the optimizers' per-element state of ``param`` at ``index`` (moments, momentum)."""
    for optimizer in optimizers:
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value[index] = 0


@torch.no_grad()
def reinit_units_(wiring: UnitWiring, units: list[int], optimizers: Sequence[torch.optim.Optimizer],
                  generator: torch.Generator) -> int:
    """Revive ``units`` of one activation site in place; returns how many were revived.

    ``optimizers`` are searched for state of the touched parameters (any that hold none are
    left alone).

    Example:
        >>> from lightning_convergence.remedies.unit_wiring import UnitWiring
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> wiring = UnitWiring("0", net[0], "2", net[2])
        >>> reinit_units_(wiring, [1, 3], [], torch.Generator().manual_seed(0))
        2
        >>> net[2].weight[:, [1, 3]].abs().sum().item()
        0.0
    """
    if not units:
        return 0
    producer, consumer = wiring.producer, wiring.consumer
    rows = torch.tensor(units, dtype=torch.long, device=producer.weight.device)
    new_weight, new_bias = default_init_rows(producer.weight, rows.cpu(), generator)
    producer.weight[rows] = new_weight.to(producer.weight.device)
    _reset_state(optimizers, producer.weight, (rows,))
    if producer.bias is not None:
        producer.bias[rows] = new_bias.to(producer.bias.device, producer.bias.dtype)
        _reset_state(optimizers, producer.bias, (rows,))
    for _, norm in wiring.norms:
        _reset_norm_units(norm, rows, optimizers)
    k = wiring.columns_per_unit
    columns = (rows[:, None] * k + torch.arange(k, device=rows.device)).reshape(-1)
    consumer.weight[:, columns.to(consumer.weight.device)] = 0
    _reset_state(optimizers, consumer.weight, (slice(None), columns.to(consumer.weight.device)))
    return len(units)


def _reset_norm_units(norm: nn.Module, rows: Tensor, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    if norm.weight is not None:
        norm.weight[rows] = 1
        _reset_state(optimizers, norm.weight, (rows,))
    if norm.bias is not None:
        norm.bias[rows] = 0
        _reset_state(optimizers, norm.bias, (rows,))
    if norm.running_mean is not None:
        norm.running_mean[rows] = 0
    if norm.running_var is not None:
        norm.running_var[rows] = 1
