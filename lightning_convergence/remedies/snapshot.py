"""A copy of the model and optimizer in CPU memory, taken on healthy steps, to roll back to.

Cost: one copy of every parameter and buffer plus the optimizer's state (for Adam, two more
tensors per parameter), so about 3x the parameter memory in host RAM with Adam, 2x with SGD and
momentum; the copy is made into buffers allocated once and reused. Rolling back restores the
weights and the optimizer's state (moments, step counts) but keeps the param groups' current
hyperparameters, so that the user's LR scheduler keeps its own trajectory.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class Snapshot:
    """The last healthy state of one model and its optimizers.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> snapshot = Snapshot()
        >>> snapshot.take(model, [optimizer], step=3)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(float("nan"))
        >>> snapshot.restore(model, [optimizer])
        3
        >>> bool(torch.isfinite(model.weight).all())
        True
    """

    def __init__(self) -> None:
        self.step: int | None = None
        self._model: dict[str, Tensor] | None = None
        self._optimizers: list[dict] | None = None

    @property
    def taken(self) -> bool:
        return self.step is not None

    @torch.no_grad()
    def take(self, model: nn.Module, optimizers: list[torch.optim.Optimizer], step: int) -> None:
        state = model.state_dict()
        if self._model is None or self._model.keys() != state.keys():
            self._model = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        else:
            for key, value in state.items():
                self._model[key].copy_(value.detach())
        self._optimizers = [_copy_to_cpu(opt.state_dict()) for opt in optimizers]
        self.step = step

    @torch.no_grad()
    def restore(self, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> int:
        """Load the snapshot back; returns the step it was taken at."""
        if self._model is None or self._optimizers is None or self.step is None:
            raise RuntimeError("no snapshot was taken")
        model.load_state_dict(self._model)
        for optimizer, saved in zip(optimizers, self._optimizers):
            current = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
            optimizer.load_state_dict(saved)
            for group, hyper in zip(optimizer.param_groups, current):
                group.update(hyper)  # the scheduler's current LR, not the LR at snapshot time
        return self.step

    def clear(self) -> None:
        self.step, self._model, self._optimizers = None, None, None


def _copy_to_cpu(value):
    """A deep copy of an optimizer state dict with every tensor copied to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _copy_to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_to_cpu(v) for v in value]
    return copy.deepcopy(value)
