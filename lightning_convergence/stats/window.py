"""A declared device window: named statistics accumulated on the device between two reads.

Each statistic is declared once, by name, shape and how values merge (``sum``, ``min``, ``max``
or ``first``); updating, resetting, reading on the host, reducing across ranks and
checkpointing all follow from the declaration, so no caller packs offsets by hand. All slots live
in one flat float64 buffer laid out by reduction kind, so that:

- a host read is one transfer of the whole buffer (plus any ``extra`` tensors, in the same
  ``torch.cat``);
- a reduction across ranks is one collective per reduction kind present, on a contiguous slice;
- a checkpoint stores each slot by name, and a checkpoint that lacks a newer slot still loads
  (the slot keeps its identity value).

The idea is torchmetrics' ``Metric.add_state(name, default, dist_reduce_fx=...)``. torchmetrics
itself is not used on this path, for two reasons. Measured (``python benchmarks/window_update.py``:
torch 2.13 CPU, torchmetrics 1.9, one thread, a sum and a max state, min of 3 x 20,000 calls on a
busy 2-core machine): ``Metric.update`` took 54 to 56 us per call, ``DeviceWindow.update`` 20.6 us,
and the same two in-place ops by hand 7.3 us. And by design, its ``sync`` gathers every state
separately (an ``all_gather`` of shapes, then of values, per state), where this window makes one
``all_reduce`` per reduction kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Union

import torch
from torch import Tensor

Reduction = Literal["sum", "min", "max", "first"]
REDUCTIONS: tuple[Reduction, ...] = ("sum", "min", "max", "first")
# What an empty slot holds: the identity of its merge. "first" keeps the first value that was not
# NaN (an unset slot is NaN); across ranks it takes the smallest value any rank set.
_IDENTITY: dict[str, float] = {"sum": 0.0, "min": math.inf, "max": -math.inf, "first": math.nan}

_MAX_PLANS = 256  # merge plans kept, one per set of names updated together

AllReduce = Callable[[Tensor, str], Tensor]
"""``all_reduce(tensor, op)`` with ``op`` in ``"sum" | "min" | "max"``, returning the reduced tensor."""

Value = Union[float, list]


@dataclass(frozen=True)
class Slot:
    """One declared statistic: ``shape`` (``()`` for a scalar) and how values merge."""

    name: str
    shape: tuple[int, ...]
    reduce: Reduction

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class DeviceWindow:
    """Named statistics on the device, read in one transfer, reduced and checkpointed by name.

    Slots may be declared at any time (a layer seen for the first time); declaring after the
    buffer exists re-lays it out and keeps every value.

    Args:
        dtype: the buffer's dtype (float64: step numbers and counts stay exact).

    Raises:
        ValueError: a slot declared twice with another shape or reduction, an unknown
            reduction, or an update of a slot that was never declared (``KeyError``).

    Example:
        >>> import torch
        >>> window = DeviceWindow()
        >>> window.declare("steps", reduce="sum")
        >>> window.declare("max_norm", reduce="max")
        >>> window.declare("first_bad_step", reduce="min")
        >>> for step, norm in enumerate([1.0, 5.0, 2.0]):
        ...     window.update(steps=torch.tensor(1.0), max_norm=torch.tensor(norm),
        ...                   first_bad_step=torch.tensor(step if norm > 4 else math.inf))
        >>> window.read()
        {'steps': 3.0, 'first_bad_step': 1.0, 'max_norm': 5.0}
    """

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype
        self._slots: dict[str, Slot] = {}
        self._buffer: Tensor | None = None
        self._offsets: dict[str, tuple[int, int]] = {}
        self._plans: dict[tuple[str, ...], list] = {}  # views into the buffer, per set of names

    # ----------------------------------------------------------------- declaring

    def declare(self, name: str, shape: tuple[int, ...] | int = (), reduce: Reduction = "sum") -> None:
        """Declare a slot; declaring the same slot again with the same spec does nothing."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if reduce not in REDUCTIONS:
            raise ValueError(f"`reduce` must be one of {REDUCTIONS}, got {reduce!r}.")
        slot = Slot(name, shape, reduce)
        known = self._slots.get(name)
        if known == slot:
            return
        if known is not None:
            raise ValueError(f"slot {name!r} is declared as {known}, got {slot}.")
        self._slots[name] = slot
        if self.allocated:
            self._relayout(self.device)

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(self._slots.values())

    def _layout(self) -> dict[str, tuple[int, int]]:
        offsets, at = {}, 0
        for kind in REDUCTIONS:  # grouped by kind: each kind is one contiguous slice
            for slot in self._slots.values():
                if slot.reduce == kind:
                    offsets[slot.name] = (at, at + slot.numel)
                    at += slot.numel
        return offsets

    def _relayout(self, device: torch.device) -> None:
        old, old_offsets = self._buffer, self._offsets
        self._plans.clear()
        self._offsets = self._layout()
        width = max((stop for _, stop in self._offsets.values()), default=0)
        self._buffer = torch.empty(width, dtype=self.dtype, device=device)
        for slot in self._slots.values():
            start, stop = self._offsets[slot.name]
            if old is not None and slot.name in old_offsets:
                a, b = old_offsets[slot.name]
                self._buffer[start:stop] = old[a:b].to(device)
            else:
                self._buffer[start:stop] = _IDENTITY[slot.reduce]

    def allocate(self, device: torch.device | str) -> None:
        """Create the buffer on ``device`` (or move it there, keeping the values)."""
        device = torch.device(device)
        if self._buffer is None:
            self._relayout(device)
        elif self._buffer.device != device:
            self._buffer = self._buffer.to(device)
            self._plans.clear()

    @property
    def allocated(self) -> bool:
        return self._buffer is not None

    @property
    def device(self) -> torch.device | None:
        return None if self._buffer is None else self._buffer.device

    # ----------------------------------------------------------------- every step (no host read)

    def __getitem__(self, name: str) -> Tensor:
        """The slot as a view of the buffer, in its declared shape."""
        if self._buffer is None:
            raise RuntimeError("the window has no buffer yet: call `allocate(device)` first.")
        start, stop = self._offsets[name]
        return self._buffer[start:stop].view(self._slots[name].shape)

    def update(self, **values: Tensor) -> None:
        """Merge one value into each named slot by its declared reduction, on the device.

        Slots of one reduction kind declared next to each other and updated together are merged
        with a single operation on their slice. The plan for a set of names is worked out once.
        """
        if self._buffer is None:
            self.allocate(next(iter(values.values())).device)
        key = tuple(values)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:  # sets of names that vary with the data (a model's branches)
                self._plans.clear()
            plan = self._plans[key] = self._plan(key)
        for target, kind, names in plan:
            if len(names) == 1:
                value = values[names[0]].reshape(-1)
            else:  # (a reshape per value costs more than the concatenation: only where needed)
                value = torch.cat([v if v.dim() == 1 else v.reshape(-1) for v in map(values.__getitem__, names)])
            _merge(target, value, kind)  # each merge promotes the value to the buffer's dtype exactly

    def set(self, **values: Tensor) -> None:
        """Overwrite the named slots (state carried across windows, such as an EMA), on the
        device; neighbouring slots set together take one copy."""
        if self._buffer is None:
            self.allocate(next(iter(values.values())).device)
        key = ("=",) + tuple(values)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(tuple(values))
        for target, _, names in plan:
            if len(names) == 1:
                target.copy_(values[names[0]].reshape(-1))
            else:
                target.copy_(torch.cat([values[n].reshape(-1).to(self.dtype) for n in names]))

    def _plan(self, names: tuple[str, ...]) -> list[tuple[Tensor, str, tuple[str, ...]]]:
        """Views of the buffer to merge into, one per contiguous run of same-kind slots."""
        for name in names:
            if name not in self._slots:
                raise KeyError(f"slot {name!r} was never declared; declared: {sorted(self._slots)}.")
        ordered = sorted(names, key=lambda n: self._offsets[n][0])
        plan, run = [], [ordered[0]]
        for name in ordered[1:]:
            prev = run[-1]
            if self._slots[name].reduce == self._slots[prev].reduce and self._offsets[name][0] == self._offsets[prev][1]:
                run.append(name)
            else:
                plan.append(run)
                run = [name]
        plan.append(run)
        return [(self._buffer[self._offsets[r[0]][0]:self._offsets[r[-1]][1]], self._slots[r[0]].reduce, tuple(r))
                for r in plan]

    def write(self, name: str, index: int, value: Tensor) -> None:
        """Set element ``index`` of a 1-d slot (a per-step trace), on the device."""
        self[name][index] = value.to(self.dtype)

    def reset(self) -> None:
        """Every slot back to its identity (keeps the buffer)."""
        if self._buffer is None:
            return
        for slot in self._slots.values():
            start, stop = self._offsets[slot.name]
            self._buffer[start:stop] = _IDENTITY[slot.reduce]

    # ----------------------------------------------------------------- logging steps

    def reduce_across(self, all_reduce: AllReduce) -> None:
        """Merge the window over ranks in place: one collective per reduction kind present.

        Every rank must call this at the same point with the same declarations. NaN in a
        ``max`` slot is mapped to +inf first (gloo's MAX drops a NaN held by another rank);
        ``first`` slots take the smallest value any rank set.
        """
        if self._buffer is None:
            return
        for kind in REDUCTIONS:
            names = [s.name for s in self._slots.values() if s.reduce == kind]
            if not names:
                continue
            start = min(self._offsets[n][0] for n in names)
            stop = max(self._offsets[n][1] for n in names)
            part = self._buffer[start:stop]
            if kind == "sum":
                part.copy_(all_reduce(part.clone(), "sum"))
            elif kind == "max":
                part.copy_(all_reduce(torch.nan_to_num(part, nan=math.inf), "max"))
            elif kind == "min":
                part.copy_(all_reduce(part.clone(), "min"))
            else:  # first: an unset slot (NaN) loses to any rank's value; unset everywhere stays NaN
                reduced = all_reduce(torch.nan_to_num(part, nan=math.inf), "min")
                part.copy_(torch.where(reduced == math.inf, math.nan, reduced))

    def read(self, extra: Mapping[str, Tensor] | None = None) -> dict[str, Value]:
        """Every slot (and every ``extra`` tensor) on the host, in one transfer.

        Note: this is a device-to-host sync point; call it on logging steps only.

        Returns:
            ``{name: float}`` for scalar slots and ``{name: list[float]}`` (flattened) for the rest.
        """
        extra = dict(extra or {})
        parts, names = [], []
        if self._buffer is not None:
            parts.append(self._buffer)
            names += [(n, self._offsets[n], self._slots[n].shape) for n in self._offsets]
        at = 0 if self._buffer is None else self._buffer.numel()
        device = self.device or next((t.device for t in extra.values()), torch.device("cpu"))
        for name, tensor in extra.items():
            flat = tensor.detach().reshape(-1).to(device=device, dtype=self.dtype)
            parts.append(flat)
            names.append((name, (at, at + flat.numel()), tuple(tensor.shape)))
            at += flat.numel()
        values = torch.cat(parts).tolist() if parts else []
        if self._buffer is None:  # unallocated slots read as their identity
            out: dict[str, Value] = {s.name: (_IDENTITY[s.reduce] if s.shape == () else [_IDENTITY[s.reduce]] * s.numel)
                                     for s in self._slots.values()}
        else:
            out = {}
        for name, (start, stop), shape in names:
            out[name] = values[start] if shape == () else values[start:stop]
        return out

    # ----------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Tensor]:
        """Each slot by name, as a CPU tensor (plain tensors: loads with ``weights_only=True``)."""
        if self._buffer is None:
            return {}
        return {name: self[name].detach().cpu().clone() for name in self._slots}

    def load_state_dict(self, state: Mapping[str, Tensor], device: torch.device | str = "cpu") -> None:
        """Restore the slots found in ``state`` whose shape matches; others keep their identity
        (a checkpoint from before a slot was added, or of another layer count)."""
        if not state:
            return
        self.allocate(device)  # (moves the buffer if needed; plans follow)
        for name, value in state.items():
            slot = self._slots.get(name)
            if slot is not None and isinstance(value, Tensor) and tuple(value.shape) == slot.shape:
                self[name].copy_(value.to(self._buffer.device, self.dtype))


def _merge(current: Tensor, value: Tensor, kind: str) -> None:
    """Merge ``value`` into ``current`` in place (both flat, one device; ``value`` of any
    floating dtype no wider than ``current``'s, promoted exactly by the op)."""
    if kind == "sum":
        current.add_(value)
    elif kind == "max":
        torch.maximum(current, value, out=current)
    elif kind == "min":
        torch.minimum(current, value, out=current)
    else:
        current.copy_(torch.where(torch.isnan(current), value, current))


def reference_merge(values: list[float], kind: Reduction) -> float:
    """The obvious merge of a sequence of values by ``kind``, for tests (``math.nan`` if empty
    for ``first``)."""
    if kind == "sum":
        return float(sum(values))
    if kind == "max":
        return max(values, default=-math.inf)
    if kind == "min":
        return min(values, default=math.inf)
    return next((v for v in values if not math.isnan(v)), math.nan)
