"""A copy of the model and optimizer in CPU memory, taken on healthy steps, to roll back to.

Cost: one copy of every parameter and buffer plus the optimizer's state (for Adam, two more
tensors per parameter), so about 3x the parameter memory in host RAM with Adam, 2x with SGD and
momentum; the copy is made into buffers allocated once and reused. Rolling back restores the
weights and the optimizer's state (moments, step counts) but keeps the param groups' current
hyperparameters, so that the user's LR scheduler keeps its own trajectory.
"""

from __future__ import annotations

import copy
import random

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


class ExactSnapshot(Snapshot):
    """A :class:`Snapshot` that restores everything a few probe steps change, so that training
    then goes on exactly as if they had not run: the weights and buffers (BatchNorm statistics),
    the optimizer's state and its param groups' hyperparameters, the LR schedulers' state, and the
    random number generators (Python's, NumPy's, torch's CPU and CUDA generators), and an fp16
    loss scaler when given.

    What it cannot restore is the data: batches drawn from the loader meanwhile count as consumed.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> snapshot = ExactSnapshot()
        >>> snapshot.take(model, [optimizer], step=0)
        >>> first = torch.rand(3)
        >>> optimizer.param_groups[0]["lr"] = 5.0
        >>> _ = snapshot.restore(model, [optimizer])
        >>> bool(torch.equal(torch.rand(3), first)), optimizer.param_groups[0]["lr"]
        (True, 0.1)
    """

    def __init__(self) -> None:
        super().__init__()
        self._schedulers: list[dict] = []
        self._groups: list[list[dict]] = []
        self._rng: dict = {}
        self._scaler: dict | None = None

    def take(self, model: nn.Module, optimizers: list[torch.optim.Optimizer], step: int,
             schedulers: list | None = None, scaler=None) -> None:
        super().take(model, optimizers, step)
        self._scaler = None if scaler is None else copy.deepcopy(scaler.state_dict())
        self._groups = [[{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in o.param_groups]
                        for o in optimizers]
        self._schedulers = [copy.deepcopy(s.state_dict()) for s in schedulers or []]
        self._rng = capture_rng()

    def saved(self) -> tuple[dict, list[dict], list[dict]]:
        """The saved model state, optimizer state dicts (with their param groups as taken) and
        scheduler states, as they were taken (copies)."""
        if self._model is None or self._optimizers is None:
            raise RuntimeError("no snapshot was taken")
        return dict(self._model), copy.deepcopy(self._optimizers), copy.deepcopy(self._schedulers)

    def restore(self, model: nn.Module, optimizers: list[torch.optim.Optimizer], schedulers: list | None = None,
                scaler=None) -> int:
        step = super().restore(model, optimizers)
        if scaler is not None and self._scaler is not None:
            scaler.load_state_dict(copy.deepcopy(self._scaler))
        for optimizer, groups in zip(optimizers, self._groups):
            for group, saved in zip(optimizer.param_groups, groups):
                group.update(copy.deepcopy(saved))
        for scheduler, saved in zip(schedulers or [], self._schedulers):
            scheduler.load_state_dict(copy.deepcopy(saved))
        restore_rng(self._rng)
        return step

    def clear(self) -> None:
        super().clear()
        self._schedulers, self._groups, self._rng, self._scaler = [], [], {}, None


def capture_rng() -> dict:
    """The state of every random number generator training draws from."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy

        state["numpy"] = numpy.random.get_state()
    except ImportError:  # numpy is optional for torch
        pass
    return state


def restore_rng(state: dict) -> None:
    """Put back what :func:`capture_rng` captured."""
    if "python" in state:
        random.setstate(state["python"])
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])
