"""The state to roll back to: a copy in host memory while it fits, a checkpoint on disk beyond.

:class:`~lightning_convergence.remedies.snapshot.Snapshot` keeps this rank's model and optimizer
state in host memory: about 3x the parameters with Adam (weights and two moments), 2x with SGD
and momentum. Under FSDP2 each rank copies its own shards only, so the cost per rank is about
``(1 + k) x P / world_size`` parameters' worth, ``k`` optimizer tensors per parameter. A model of
a billion fp32 parameters trained with Adam on one rank would hold 12 GB of host memory.

:class:`RollbackPoint` measures what a snapshot would hold on this rank before taking it. Up to
``max_bytes`` it takes the in-memory snapshot as before; beyond, it asks the caller to write the
state to disk (``save``: returns where, or ``None`` when it could not) and on a rollback asks it
to read that back (``load``). The disk half is the caller's so that this layer does not know
Lightning; the callback saves through ``trainer.save_checkpoint``.

Example:
    >>> from torch import nn
    >>> model = nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> state_bytes(model, [optimizer])  # 3 float32 values, no optimizer state yet
    12
    >>> point = RollbackPoint(max_bytes=None)
    >>> point.take(model, [optimizer], step=3, save=lambda step: None)
    >>> point.where
    'memory'
    >>> point.restore(model, [optimizer], load=lambda path: None)
    3
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_convergence.remedies.snapshot import Snapshot
from lightning_convergence.stats.sharding import is_dtensor

Where = Literal["memory", "disk", "none"]


def _tensors(value: Any) -> Iterable[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def state_bytes(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> int:
    """Bytes of host memory a :class:`Snapshot` of ``model`` and ``optimizers`` takes on this rank.

    A DTensor counts its local shard only, as the snapshot copies it. Reads sizes, copies nothing.

    Args:
        model: the model whose ``state_dict()`` would be copied.
        optimizers: the optimizers whose state (moments, step counts) would be copied.
    """
    total = 0
    for tensor in _tensors([model.state_dict(), [opt.state_dict()["state"] for opt in optimizers]]):
        local = tensor.to_local() if is_dtensor(tensor) else tensor
        total += local.numel() * local.element_size()
    return total


class RollbackPoint:
    """The last steady state, in host memory up to ``max_bytes`` per rank, else on disk.

    Args:
        max_bytes: the largest snapshot held in host memory on one rank; ``None``: no limit.

    Raises:
        TypeError: ``max_bytes`` is not an int (or ``None``).
        ValueError: ``max_bytes`` is below 1.
    """

    def __init__(self, max_bytes: int | None) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)):
            raise TypeError(f"`max_bytes` must be an int or None, got {max_bytes!r}.")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"`max_bytes` must be an int >= 1 or None, got {max_bytes!r}.")
        self.max_bytes = max_bytes
        self.memory = Snapshot()
        self.path: str | None = None  # the checkpoint on disk, when the state did not fit
        self.step: int | None = None
        self.where: Where = "none"
        self.last_bytes = 0  # what the last snapshot measured, for the report

    @property
    def taken(self) -> bool:
        return self.where != "none"

    def take(self, model: nn.Module, optimizers: list[torch.optim.Optimizer], step: int,
             save: Callable[[int], str | None]) -> None:
        """Keep the state at ``step``: a copy in memory when it fits, else ``save(step)``'s file.

        Args:
            model: the model.
            optimizers: its optimizers.
            step: the optimizer step the state belongs to.
            save: writes the state to disk and returns the path, or ``None`` when it could not.
        """
        self.last_bytes = state_bytes(model, optimizers)
        if self.max_bytes is None or self.last_bytes <= self.max_bytes:
            self.memory.take(model, optimizers, step)
            self.path, self.step, self.where = None, step, "memory"
            return
        self.memory.clear()  # the memory a state this large would hold is what the limit spares
        self.path = save(step)
        self.step, self.where = (step, "disk") if self.path is not None else (None, "none")

    def restore(self, model: nn.Module, optimizers: list[torch.optim.Optimizer],
                load: Callable[[str], None]) -> int | None:
        """Put the kept state back; returns its step, or ``None`` when there is none.

        From disk, ``load(path)`` restores the weights and the optimizers' state; the param
        groups' current hyperparameters are kept, as :meth:`Snapshot.restore` keeps them, so
        that the LR schedule and the LR remedies go on from where they are.

        Args:
            model: the model.
            optimizers: its optimizers.
            load: reads the checkpoint at a path into the model and optimizers.
        """
        if self.where == "memory":
            return self.memory.restore(model, optimizers)
        if self.where == "disk" and self.path is not None:
            current = [[{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] for opt in optimizers]
            load(self.path)
            for optimizer, groups in zip(optimizers, current):
                for group, hyper in zip(optimizer.param_groups, groups):
                    group.update(hyper)
            return self.step
        return None

    def clear(self) -> None:
        """Forget the state (the file on disk stays, to be overwritten by the next one)."""
        self.memory.clear()
        self.path, self.step, self.where = None, None, "none"
