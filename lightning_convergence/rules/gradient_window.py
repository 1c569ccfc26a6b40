"""Device-side gradient bookkeeping between two logging steps, with no host sync.

Every optimizer step updates a few small tensors on the gradients' device: a spike test of the
total norm against the median of recent finite norms, counters, the first step where something
went wrong, per-layer sums, all declared in one :class:`DeviceWindow`. At a logging step the host
reads everything in one transfer and hands a :class:`WindowSummary` to the host-side rules.
"""

from __future__ import annotations

import bisect
import math
import struct
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from lightning_convergence.stats.grouping import sum_by_group
from lightning_convergence.stats.host import cpu_floats, on_host_path
from lightning_convergence.stats.host_window import HostWindow
from lightning_convergence.stats.window import DeviceWindow

Norm = Union[Tensor, float]  # a 0-d tensor on the device path, a float on the host path


@dataclass
class WindowSummary:
    """Host-side view of one logging window (plain floats and lists)."""

    steps: int
    nonfinite_grad_steps: int
    spike_steps: int
    nonfinite_loss_steps: int
    loss_steps: int
    max_total_norm: float
    max_spike_ratio: float
    spike_median: float
    first_nonfinite_grad_step: int | None
    first_spike_step: int | None
    first_nonfinite_loss_step: int | None
    layer_mean_norms: list[float]  # mean of each layer's finite norms over the window
    layer_nonfinite_steps: list[int]  # steps in the window where the layer had NaN/Inf
    total_norm_trace: list[tuple[int, float]]  # (step, total norm) for every step of the window
    finite_loss_sum: float = 0.0

    @property
    def mean_loss(self) -> float:
        """Mean of the window's finite training losses (NaN when there were none)."""
        finite = self.loss_steps - self.nonfinite_loss_steps
        return self.finite_loss_sum / finite if finite > 0 else math.nan


class SpikeDetector:
    """Flags a total norm above ``factor`` x the median of the last ``history`` finite norms.

    Runs on the device: the flag is a 0-d bool tensor, never read here. Given a float (the host
    path, for gradients on the CPU) it runs on floats and returns a bool and a float; both paths
    keep the same history. Non-finite norms never enter the history.

    Args:
        history: how many recent finite norms the median is taken over.
        factor: a norm above ``factor`` x median is a spike.
        min_history: no spike is flagged before this many finite norms were seen.

    Example:
        >>> import torch
        >>> detector = SpikeDetector(history=8, factor=10.0, min_history=3)
        >>> flags = [bool(detector.update(torch.tensor(v))[0]) for v in [1.0, 1.1, 0.9, 50.0]]
        >>> flags
        [False, False, False, True]
    """

    def __init__(self, history: int = 64, factor: float = 10.0, min_history: int = 16) -> None:
        self.history = history
        self.factor = factor
        self.min_history = min_history
        self._norms: Tensor | list[float] | None = None  # [history], NaN = empty slot
        self._sorted: list[float] | None = None  # host path: the finite values of ``_norms``, sorted
        self._cursor = 0

    def _buffer(self, like: Tensor) -> Tensor:
        if self._norms is None:
            self._norms = torch.full((self.history,), math.nan, dtype=torch.float32, device=like.device)
        elif isinstance(self._norms, list):  # kept on the host so far
            self._norms = torch.tensor(self._norms, dtype=torch.float32, device=like.device)
        return self._norms

    def update(self, total_norm: Norm) -> tuple[Tensor, Tensor] | tuple[bool, float]:
        """Test ``total_norm`` (0-d, or a float) against the history, then add it; return
        (spike, median), tensors or a bool and a float as ``total_norm`` is."""
        if isinstance(total_norm, float):
            return self._update_host(total_norm)
        norms = self._buffer(total_norm)
        norm = total_norm.to(torch.float32)
        median = torch.nanmedian(norms)  # NaN while the history is empty
        enough = (~torch.isnan(norms)).sum() >= self.min_history
        finite = torch.isfinite(norm)
        spike = finite & enough & (norm > self.factor * median)
        norms[self._cursor % self.history] = torch.where(finite, norm, math.nan)
        self._cursor += 1
        return spike, median

    def _update_host(self, norm: float) -> tuple[bool, float]:
        if self._norms is None:
            self._norms, self._sorted = [math.nan] * self.history, []
        elif isinstance(self._norms, Tensor):
            self._norms = cpu_floats(self._norms.cpu())  # restored from a checkpoint
            self._sorted = None
        if self._sorted is None:
            self._sorted = sorted(v for v in self._norms if not math.isnan(v))
        seen = self._sorted  # the history's finite norms, kept sorted as they come and go
        median = seen[(len(seen) - 1) // 2] if seen else math.nan  # the lower median, as torch's
        finite = math.isfinite(norm)
        spike = finite and len(seen) >= self.min_history and norm > self.factor * median
        slot = self._cursor % self.history
        if not math.isnan(self._norms[slot]):
            del seen[bisect.bisect_left(seen, self._norms[slot])]
        # Stored as float32 values, as the device path stores them.
        self._norms[slot] = _float32(norm) if finite else math.nan
        if finite:
            bisect.insort(seen, self._norms[slot])
        self._cursor += 1
        return spike, median

    def state_dict(self) -> dict:
        norms = self._norms
        if isinstance(norms, list):
            norms = torch.tensor(norms, dtype=torch.float32)
        norms = norms.cpu() if norms is not None else None
        return {"norms": norms, "cursor": self._cursor}

    def load_state_dict(self, state: dict) -> None:
        self._norms = state.get("norms")
        self._cursor = int(state.get("cursor", 0))
        self._sorted = None


class GradientWindow:
    """The gradient statistics of one logging window, declared in a :class:`DeviceWindow`.

    Args:
        num_layers: number of layer groups whose norms are tracked.
        trace_capacity: how many per-step total norms are kept for logging (one window).
        host: keep the window on the host (the host path, for gradients on the CPU): updates then
            take floats and lists of floats.
    """

    def __init__(self, num_layers: int, trace_capacity: int, host: bool = False) -> None:
        self.num_layers = num_layers
        self.trace_capacity = trace_capacity
        self.host = host
        self._trace_steps: list[int] = []
        self._ones = [1.0] * num_layers
        window = self._window = HostWindow() if host else DeviceWindow()
        g = num_layers
        # Declared in the order they are updated together: each group is one op per step.
        for name in ("steps", "nonfinite_grad_steps", "spike_steps"):
            window.declare(name, (), "sum")
        window.declare("layer_norm_sum", g, "sum")  # finite per-layer norms, summed
        window.declare("layer_finite_steps", g, "sum")
        window.declare("layer_nonfinite_steps", g, "sum")
        for name in ("nonfinite_loss_steps", "loss_steps", "finite_loss_sum"):
            window.declare(name, (), "sum")
        window.declare("max_total_norm", (), "max")
        window.declare("max_spike_ratio", (), "max")
        window.declare("first_nonfinite_grad_step", (), "min")
        window.declare("first_spike_step", (), "min")
        window.declare("first_nonfinite_loss_step", (), "min")
        window.declare("spike_median", (), "first")  # the median at the first spike, for the message
        # The total norm of each step, written in place (the same on every DDP rank).
        window.declare("total_norm_trace", trace_capacity, "max")

    def state_dict(self) -> dict:
        """The window so far (a checkpoint may fall in the middle of one)."""
        if not self._window.allocated:
            return {}
        return {"slots": self._window.state_dict(), "trace_steps": list(self._trace_steps)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        if not state or "slots" not in state:
            return  # no window saved, or one of an older layout: start afresh
        self._window.allocate(device)
        self._window.reset()
        self._window.load_state_dict(state["slots"], device)
        self._trace_steps = [int(s) for s in state["trace_steps"][: self.trace_capacity]]

    def reset(self) -> None:
        """Start a new window (keeps the device buffer)."""
        self._window.reset()
        self._trace_steps = []

    def update(
        self,
        step: int,
        total_norm: Norm,
        spike: Tensor | bool,
        median: Norm,
        layer_sumsq: Tensor | list[float],
    ) -> None:
        """Add one optimizer step: tensors on one device, nothing read on the host; or, on the
        host path, floats (``layer_sumsq`` a list)."""
        if self.host:
            self._update_host(step, float(total_norm), bool(spike), float(median), layer_sumsq)
            return
        layer_norms, layer_nonfinite = layer_sumsq.sqrt(), ~torch.isfinite(layer_sumsq)
        nonfinite = ~torch.isfinite(total_norm)
        finite_layer = torch.isfinite(layer_norms)
        safe_norm = torch.nan_to_num(total_norm.double(), nan=0.0, posinf=0.0)
        one = torch.ones(1, dtype=torch.float64, device=total_norm.device)
        self._window.update(
            steps=one, nonfinite_grad_steps=nonfinite, spike_steps=spike,
            layer_norm_sum=torch.where(finite_layer, layer_norms.double(), 0.0),
            layer_finite_steps=finite_layer, layer_nonfinite_steps=layer_nonfinite > 0,
            max_total_norm=safe_norm, max_spike_ratio=torch.where(spike, safe_norm / median.double(), 0.0),
            first_nonfinite_grad_step=torch.where(nonfinite, float(step), math.inf),
            first_spike_step=torch.where(spike, float(step), math.inf),
            spike_median=torch.where(spike, median.double(), math.nan),
        )
        if len(self._trace_steps) < self.trace_capacity:
            self._window.write("total_norm_trace", len(self._trace_steps), total_norm.double())
            self._trace_steps.append(step)

    def _update_host(self, step: int, total_norm: float, spike: bool, median: float,
                     layer_sumsq: list[float]) -> None:
        """:meth:`update` on floats: the same values, with Python arithmetic."""
        finite = math.isfinite(total_norm)
        if finite and not spike:  # every layer's sum is finite too: the usual step, in fewer operations
            self._window.update(steps=1.0, layer_norm_sum=[math.sqrt(s) for s in layer_sumsq],
                                layer_finite_steps=self._ones, max_total_norm=total_norm, max_spike_ratio=0.0)
            if len(self._trace_steps) < self.trace_capacity:
                self._window.write("total_norm_trace", len(self._trace_steps), total_norm)
                self._trace_steps.append(step)
            return
        layer_norms = [math.sqrt(s) if s >= 0 else math.nan for s in layer_sumsq]
        safe_norm = total_norm if finite else 0.0  # nan_to_num(nan=0, posinf=0)
        self._window.update(
            steps=1.0, nonfinite_grad_steps=not finite, spike_steps=spike,
            layer_norm_sum=[n if math.isfinite(n) else 0.0 for n in layer_norms],
            layer_finite_steps=[math.isfinite(n) for n in layer_norms],
            layer_nonfinite_steps=[not math.isfinite(s) for s in layer_sumsq],
            max_total_norm=safe_norm, max_spike_ratio=safe_norm / median if spike else 0.0,
            first_nonfinite_grad_step=math.inf if finite else float(step),
            first_spike_step=float(step) if spike else math.inf,
            spike_median=median if spike else math.nan,
        )
        if len(self._trace_steps) < self.trace_capacity:
            self._window.write("total_norm_trace", len(self._trace_steps), total_norm)
            self._trace_steps.append(step)

    def update_loss(self, step: int, loss: Tensor | float) -> None:
        """Count a training loss value (a float on the host path); non-finite ones are remembered
        with their first step."""
        if isinstance(loss, float) or (self.host and on_host_path(loss)):
            values = [loss] if isinstance(loss, float) else cpu_floats(loss.detach())
            bad = not all(math.isfinite(v) for v in values)
            window = self._window
            window.update(nonfinite_loss_steps=bad, loss_steps=1.0, finite_loss_sum=0.0 if bad else sum(values))
            if bad:
                window.update(first_nonfinite_loss_step=float(step))
            return
        loss = loss.detach()
        bad = ~torch.isfinite(loss).all()
        self._window.update(
            nonfinite_loss_steps=bad, loss_steps=torch.ones((), device=loss.device),
            finite_loss_sum=torch.where(bad, 0.0, loss.double().sum()),
            first_nonfinite_loss_step=torch.where(bad, float(step), math.inf),
        )

    def read(self, extra: Tensor | None = None) -> tuple[WindowSummary, list[float]]:
        """Read the window on the host: the one transfer per logging step.

        Args:
            extra: a small tensor of other values to bring back in the same transfer.

        Returns:
            The summary, and ``extra``'s values as floats (empty without ``extra``).
        """
        if not self._window.allocated:
            return _empty_summary(self.num_layers), ([] if extra is None else extra.reshape(-1).tolist())
        values = self._window.read(extra=None if extra is None else {"extra": extra.reshape(-1)})
        extra_list = values.pop("extra", [])
        first = {k: (None if math.isinf(values[k]) else int(values[k]))
                 for k in ("first_nonfinite_grad_step", "first_spike_step", "first_nonfinite_loss_step")}
        means = [s / c if c > 0 else math.nan for s, c in zip(values["layer_norm_sum"], values["layer_finite_steps"])]
        n = len(self._trace_steps)
        summary = WindowSummary(
            steps=int(values["steps"]),
            nonfinite_grad_steps=int(values["nonfinite_grad_steps"]),
            spike_steps=int(values["spike_steps"]),
            nonfinite_loss_steps=int(values["nonfinite_loss_steps"]),
            loss_steps=int(values["loss_steps"]),
            max_total_norm=max(values["max_total_norm"], 0.0),
            max_spike_ratio=max(values["max_spike_ratio"], 0.0),
            spike_median=0.0 if math.isnan(values["spike_median"]) else values["spike_median"],
            layer_mean_norms=means,
            layer_nonfinite_steps=[int(b) for b in values["layer_nonfinite_steps"]],
            total_norm_trace=list(zip(self._trace_steps, values["total_norm_trace"][:n])),
            finite_loss_sum=values["finite_loss_sum"],
            **first,
        )
        return summary, extra_list


def step_norms(sumsq: Tensor | list[float], group_index: Tensor, num_groups: int,
               group_list: list[int] | None = None) -> tuple[Norm, Tensor | list[float]]:
    """The total norm and per-group sums of squares of one step, from per-tensor sums of squares
    ``[N]``: a 0-d tensor and a ``[num_groups]`` tensor on the device, or, on the host path (a CPU
    tensor, or the floats themselves), a float and a list (``group_list``: ``group_index`` as a
    list, if the caller keeps one)."""
    if isinstance(sumsq, list) or on_host_path(sumsq):
        groups = [0.0] * num_groups
        values = sumsq if isinstance(sumsq, list) else cpu_floats(sumsq)
        for value, group in zip(values, group_list or [int(g) for g in cpu_floats(group_index)]):
            groups[group] += value
        return math.sqrt(sum(groups)), groups
    return sumsq.sum().sqrt(), sum_by_group(sumsq, group_index, num_groups)


def _float32(value: float) -> float:
    """``value`` rounded to float32, as a float32 tensor would hold it."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _empty_summary(num_layers: int) -> WindowSummary:
    return WindowSummary(0, 0, 0, 0, 0, 0.0, 0.0, 0.0, None, None, None,
                         [math.nan] * num_layers, [0] * num_layers, [])
