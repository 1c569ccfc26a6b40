"""The declared window of :mod:`~lightning_convergence.stats.window` with its values in a Python
list: the host path for tensors on the CPU (see :mod:`~lightning_convergence.stats.host`).

Declaring, reading, resetting, reducing across ranks and checkpointing behave as in
:class:`~lightning_convergence.stats.window.DeviceWindow`, and a checkpoint of either loads into
the other (each slot is saved by name as a CPU tensor). Only the per-step calls differ: they take
Python floats (a bool counts 0 or 1) and sequences of them, where the device window takes tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Union

import torch
from torch import Tensor

from lightning_convergence.stats.window import _IDENTITY, AllReduce, DeviceWindow, Value

HostValue = Union[float, bool, Sequence[float]]


class HostWindow(DeviceWindow):
    """Named statistics in host memory, merged with Python arithmetic: no torch op per step.

    Example:
        >>> window = HostWindow()
        >>> window.declare("steps", reduce="sum")
        >>> window.declare("max_norm", reduce="max")
        >>> for norm in [1.0, 5.0, 2.0]:
        ...     window.update(steps=1.0, max_norm=norm)
        >>> window.read()
        {'steps': 3.0, 'max_norm': 5.0}
    """

    def __init__(self) -> None:
        super().__init__(torch.float64)
        self._values: list[float] | None = None
        # name -> (start, stop, reduction, scalar): what a per-step update needs, looked up once
        self._places: dict[str, tuple[int, int, str, bool]] = {}

    @classmethod
    def like(cls, window: DeviceWindow) -> "HostWindow":
        """A host window with ``window``'s declarations and values (if it holds any)."""
        if isinstance(window, HostWindow):
            return window
        host = cls()
        for slot in window.slots:
            host.declare(slot.name, slot.shape, slot.reduce)
        if window.allocated:
            host.load_state_dict(window.state_dict())
        return host

    def _relayout(self, device: torch.device | None) -> None:
        old, old_offsets = self._values, self._offsets
        self._offsets = self._layout()
        self._places = {slot.name: (*self._offsets[slot.name], slot.reduce, slot.shape == ())
                        for slot in self._slots.values()}
        values = [0.0] * max((stop for _, stop in self._offsets.values()), default=0)
        for slot in self._slots.values():
            start, stop = self._offsets[slot.name]
            if old is not None and slot.name in old_offsets:
                a, b = old_offsets[slot.name]
                values[start:stop] = old[a:b]
            else:
                values[start:stop] = [_IDENTITY[slot.reduce]] * slot.numel
        self._values = values

    def allocate(self, device: torch.device | str | None = None) -> None:
        """Create the values (the device is ignored: they live on the host)."""
        if self._values is None:
            self._relayout(None)

    @property
    def allocated(self) -> bool:
        return self._values is not None

    @property
    def device(self) -> torch.device | None:
        return None if self._values is None else torch.device("cpu")

    def __getitem__(self, name: str) -> Value:  # type: ignore[override]
        """The slot's value: a float for a scalar slot, a list (a copy) otherwise."""
        if self._values is None:
            raise RuntimeError("the window has no values yet: call `allocate()` first.")
        start, stop = self._offsets[name]
        return self._values[start] if self._slots[name].shape == () else self._values[start:stop]

    def update(self, **values: HostValue) -> None:  # type: ignore[override]
        """Merge one value into each named slot by its declared reduction."""
        if self._values is None:
            self.allocate()
        places, held = self._places, self._values
        for name, value in values.items():
            place = places.get(name)
            if place is None:
                self._slot(name)  # raises: never declared
            start, stop, reduce, scalar = place
            if scalar:
                current = held[start]
                if reduce == "sum":
                    held[start] = current + value
                else:
                    held[start] = _merge(current, float(value), reduce)
            elif reduce == "sum":  # the common vector slot: a plain addition (bools count 0 or 1)
                held[start:stop] = [a + b for a, b in zip(held[start:stop], value)]
            else:
                held[start:stop] = [_merge(a, float(b), reduce) for a, b in zip(held[start:stop], value)]

    def set(self, **values: HostValue) -> None:  # type: ignore[override]
        """Overwrite the named slots."""
        self.allocate()
        for name, value in values.items():
            self._slot(name)
            start, stop = self._offsets[name]
            if stop - start == 1 and not isinstance(value, Sequence):
                self._values[start] = float(value)
            else:
                self._values[start:stop] = [float(v) for v in value]

    def write(self, name: str, index: int, value: float) -> None:  # type: ignore[override]
        """Set element ``index`` of a 1-d slot."""
        self.allocate()
        self._slot(name)
        self._values[self._offsets[name][0] + index] = float(value)

    def _slot(self, name: str):
        slot = self._slots.get(name)
        if slot is None:
            raise KeyError(f"slot {name!r} was never declared; declared: {sorted(self._slots)}.")
        return slot

    def reset(self) -> None:
        if self._values is None:
            return
        for slot in self._slots.values():
            start, stop = self._offsets[slot.name]
            self._values[start:stop] = [_IDENTITY[slot.reduce]] * slot.numel

    # ----------------------------------------------------------------- logging steps and checkpoints

    def reduce_across(self, all_reduce: AllReduce) -> None:
        """As :meth:`DeviceWindow.reduce_across`, through a CPU tensor of the values."""
        if self._values is None:
            return
        self._buffer = torch.tensor(self._values, dtype=self.dtype)
        try:
            super().reduce_across(all_reduce)
            self._values = self._buffer.tolist()
        finally:
            self._buffer = None

    def read(self, extra: Mapping[str, Tensor] | None = None) -> dict[str, Value]:
        """Every slot (and every ``extra`` tensor, read on the host) by name."""
        out: dict[str, Value] = {}
        for slot in self._slots.values():
            if self._values is None:
                identity = _IDENTITY[slot.reduce]
                out[slot.name] = identity if slot.shape == () else [identity] * slot.numel
            else:
                out[slot.name] = self[slot.name]
        for name, tensor in (extra or {}).items():
            flat = tensor.detach().reshape(-1).to(dtype=self.dtype, device="cpu").tolist()
            out[name] = flat[0] if tensor.dim() == 0 else flat
        return out

    def state_dict(self) -> dict[str, Tensor]:
        if self._values is None:
            return {}
        return {s.name: torch.tensor(self[s.name], dtype=self.dtype).reshape(s.shape) for s in self._slots.values()}

    def load_state_dict(self, state: Mapping[str, Tensor], device: torch.device | str = "cpu") -> None:
        if not state:
            return
        self.allocate()
        for name, value in state.items():
            slot = self._slots.get(name)
            if slot is not None and isinstance(value, Tensor) and tuple(value.shape) == slot.shape:
                start, stop = self._offsets[name]
                self._values[start:stop] = value.detach().to("cpu", self.dtype).reshape(-1).tolist()


def _merge(current: float, value: float, kind: str) -> float:
    """``value`` merged into ``current`` as :func:`~lightning_convergence.stats.window._merge` does
    on the device (``max``/``min`` propagate NaN, as ``torch.maximum``/``torch.minimum``)."""
    if kind == "sum":
        return current + value
    if kind == "first":
        return value if math.isnan(current) else current
    if math.isnan(current) or math.isnan(value):
        return math.nan
    return max(current, value) if kind == "max" else min(current, value)
