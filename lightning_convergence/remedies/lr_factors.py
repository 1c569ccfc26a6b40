"""Multiplicative learning-rate factors that one remedy owns, per optimizer and param group.

The factors are applied by the shared :class:`~lightning_convergence.remedies.lr_control.LRControl`
around each optimizer step; this class only keeps them and says what a change did.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class LRFactors:
    """Per-optimizer, per-group factors, 1 until changed.

    Example:
        >>> param = torch.nn.Parameter(torch.zeros(1))
        >>> optimizer = torch.optim.SGD([param], lr=0.5)
        >>> factors = LRFactors()
        >>> changes = factors.scale([optimizer], LRFactors.uniform([optimizer], 0.1))
        >>> factors.get(0, 0), changes[0]["lr_after"]
        (0.1, [0.05])
    """

    def __init__(self) -> None:
        self.factors: dict[int, list[float]] = {}

    def get(self, index: int, group: int) -> float:
        values = self.factors.get(index)
        return values[group] if values and group < len(values) else 1.0

    @staticmethod
    def uniform(optimizers: Sequence[torch.optim.Optimizer], multiplier: float) -> dict[int, list[float]]:
        """The same multiplier for every group of every optimizer."""
        return {i: [multiplier] * len(o.param_groups) for i, o in enumerate(optimizers)}

    @staticmethod
    def led_by_first(optimizers: Sequence[torch.optim.Optimizer], first: list[float]) -> dict[int, list[float]]:
        """``first`` for the groups of the first optimizer, its first value for every other group
        (a decision taken on the first optimizer's LRs, applied to all)."""
        return {i: list(first) if i == 0 else [first[0]] * len(o.param_groups) for i, o in enumerate(optimizers)}

    def scale(self, optimizers: Sequence[torch.optim.Optimizer],
              multipliers: dict[int, list[float]]) -> list[dict]:
        """Multiply the factors; returns, per optimizer that changed, the factor applied and the
        effective LRs before and after (the scheduler's LR times the factor)."""
        changes = []
        for index, optimizer in enumerate(optimizers):
            groups = len(optimizer.param_groups)
            old = self.factors.get(index, [1.0] * groups)
            new = [f * m for f, m in zip(old, multipliers.get(index, [1.0] * groups))]
            if new == old:
                continue
            self.factors[index] = new
            changes.append({
                "optimizer": index, "factor": [n / o if o else 1.0 for n, o in zip(new, old)],
                "lr_before": [g["lr"] * f for g, f in zip(optimizer.param_groups, old)],
                "lr_after": [g["lr"] * f for g, f in zip(optimizer.param_groups, new)],
            })
        return changes

    def state_dict(self) -> dict[str, list[float]]:
        return {str(k): list(v) for k, v in self.factors.items()}

    def load_state_dict(self, state: dict) -> None:
        self.factors = {int(k): [float(f) for f in v] for k, v in state.items()}
