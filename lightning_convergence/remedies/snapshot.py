"""A copy of the model and optimizer in CPU memory, taken on healthy steps, to roll back to.

Cost: one copy of every parameter and buffer plus the optimizer's state (for Adam, two more
tensors per parameter), so about 3x the parameter memory in host RAM with Adam, 2x with SGD and
momentum. The copy is made into host buffers allocated at the first snapshot and reused by the
next ones (the weights' and the optimizer state's alike); from a CUDA device the buffers are pinned
and the copies do not block the host (``non_blocking=True``, one CUDA event recorded after them,
waited on only when the snapshot is read). DTensor shards are copied as they were (a fresh
host copy each time). Rolling back restores the
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
        self._copied = None  # a CUDA event after the last snapshot's copies, until waited on

    @property
    def taken(self) -> bool:
        return self.step is not None

    @torch.no_grad()
    def take(self, model: nn.Module, optimizers: list[torch.optim.Optimizer], step: int) -> None:
        state = model.state_dict()
        if self._model is not None and self._model.keys() != state.keys():
            self._model = None
        self._model = _copy_into(self._model, state)
        previous = self._optimizers or []
        self._optimizers = [_copy_into(previous[i] if i < len(previous) else None, opt.state_dict())
                            for i, opt in enumerate(optimizers)]
        self._copied = _copies_done(state)
        self.step = step

    def _wait(self) -> None:
        """Wait for the copies still in flight from a CUDA device (a no-op otherwise)."""
        if self._copied is not None:
            self._copied.synchronize()
            self._copied = None

    @torch.no_grad()
    def restore(self, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> int:
        """Load the snapshot back; returns the step it was taken at."""
        if self._model is None or self._optimizers is None or self.step is None:
            raise RuntimeError("no snapshot was taken")
        self._wait()
        model.load_state_dict(self._model)
        for optimizer, saved in zip(optimizers, self._optimizers):
            current = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
            # A copy: torch's load_state_dict keeps tensors already on the right device and dtype as
            # they are, so the optimizer would step the snapshot's own buffers from then on.
            optimizer.load_state_dict(_cloned(saved))
            for group, hyper in zip(optimizer.param_groups, current):
                group.update(hyper)  # the scheduler's current LR, not the LR at snapshot time
        return self.step

    def clear(self) -> None:
        self.step, self._model, self._optimizers, self._copied = None, None, None, None


def _copy_into(old, new):
    """``new`` (a state dict, or a part of one) copied to the host, into ``old``'s tensors where
    they fit (same shape and dtype): buffers allocated once. A tensor from a CUDA device goes into
    pinned memory without blocking the host; a DTensor is copied as it is."""
    if isinstance(new, Tensor):
        value = new.detach()
        if _is_plain(value) and isinstance(old, Tensor) and old.shape == value.shape and old.dtype == value.dtype:
            return old.copy_(value, non_blocking=value.is_cuda)
        if not _is_plain(value) or not value.is_cuda:
            return value.to("cpu", copy=True)
        buffer = torch.empty(value.shape, dtype=value.dtype, device="cpu", pin_memory=True)
        return buffer.copy_(value, non_blocking=True)
    if isinstance(new, dict):
        old = old if isinstance(old, dict) else {}
        return {k: _copy_into(old.get(k), v) for k, v in new.items()}
    if isinstance(new, list):
        old = old if isinstance(old, list) and len(old) == len(new) else [None] * len(new)
        return [_copy_into(o, v) for o, v in zip(old, new)]
    return copy.deepcopy(new)


def _cloned(value):
    """``value`` with every tensor cloned (containers rebuilt, other values shared)."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cloned(v) for v in value]
    return value


def _is_plain(tensor: Tensor) -> bool:
    """A strided tensor of its own (not a DTensor or another tensor subclass)."""
    return type(tensor) is Tensor or type(tensor) is torch.nn.Parameter


def _copies_done(state: dict):
    """A CUDA event recorded after the copies just queued, when any came from a CUDA device."""
    if any(isinstance(v, Tensor) and v.is_cuda for v in state.values()):
        event = torch.cuda.Event()
        event.record()
        return event
    return None


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
        scheduler states, as they were taken (the model's tensors are the snapshot's buffers,
        overwritten by the next ``take``: use them at once)."""
        if self._model is None or self._optimizers is None:
            raise RuntimeError("no snapshot was taken")
        self._wait()
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
