"""Per-step scalars kept on the device until their window is read: one host read per window.

The training loss of every batch is such a series: appending costs no host read, and the
window's values come to the host together, optionally reduced across ranks first (one
collective). Unlike :class:`~lightning_convergence.stats.window.DeviceWindow`, the number of
values per window is not fixed (batches per step under gradient accumulation, a window cut
short by the end of an epoch or a resume). On the host path a caller may append the value as a
float it has already read (a CPU loss reads for free): nothing is copied per step then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class StepSeries:
    """Scalars tagged with the optimizer step they belong to, read and cleared per window.

    Example:
        >>> series = StepSeries()
        >>> series.append(0, torch.tensor(2.0)); series.append(1, torch.tensor(1.5))
        >>> series.take()
        ([0, 1], [2.0, 1.5])
        >>> len(series)
        0
        >>> series.append(2, 0.75); series.append(3, torch.tensor(0.5)); series.take()
        ([2, 3], [0.75, 0.5])
    """

    def __init__(self) -> None:
        self._values: list[Tensor | float] = []  # 0-d tensors on the device they were made on, or floats
        self._steps: list[int] = []

    def __len__(self) -> int:
        return len(self._values)

    def append(self, step: int, value: Tensor | float) -> None:
        """Keep ``value`` (any tensor with one element, detached, as float32; or a float read from
        a float32 CPU tensor, kept as it is) for step ``step``."""
        self._values.append(value if isinstance(value, float) else value.detach().reshape(()).float())
        self._steps.append(int(step))

    def take(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[list[int], list[float]]:
        """The steps and values kept since the last take (then cleared): one host read.

        Args:
            reduce: applied to the stacked values (shape ``(n,)``) before the read, e.g. a mean
                across ranks; it must return the same shape.
        """
        steps, values = self.peek(reduce)
        self._values, self._steps = [], []
        return steps, values

    def peek(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[list[int], list[float]]:
        """As :meth:`take`, without clearing (one host read, and ``reduce``'s collective if any)."""
        if not self._values:
            return [], []
        if reduce is None and all(isinstance(v, float) for v in self._values):
            return list(self._steps), list(self._values)  # the host path: read already
        values = self._stacked()  # (n,)
        if reduce is not None:
            values = reduce(values)
        return list(self._steps), values.tolist()  # the one host read

    def _stacked(self) -> Tensor:
        if all(isinstance(v, float) for v in self._values):
            return torch.tensor(self._values, dtype=torch.float32)
        # Floats come from the CPU only (the host path), so any tensor among them is on the CPU too.
        return torch.stack([torch.tensor(v, dtype=torch.float32) if isinstance(v, float) else v
                            for v in self._values])

    def clear(self) -> None:
        """Forget the values kept since the last take, without reading them."""
        self._values, self._steps = [], []

    def to(self, device: torch.device) -> None:
        """Move the kept values (restored from a checkpoint on the CPU) to ``device``."""
        self._values = [v if isinstance(v, float) else v.to(device) for v in self._values]

    def state_dict(self) -> dict[str, Any]:
        """``{"values": a CPU tensor (n,) or None, "steps": [int]}`` (loads with ``weights_only=True``)."""
        return {"values": self._stacked().cpu() if self._values else None, "steps": list(self._steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = state.get("values")
        self._values = [] if values is None else list(values.unbind())
        self._steps = [int(s) for s in state.get("steps", [])]
