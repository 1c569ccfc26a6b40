"""Device-side gradient bookkeeping between two logging steps, with no host sync.

Every optimizer step updates a few small tensors on the gradients' device: a spike test of the
total norm against the median of recent finite norms, counters, the first step where something
went wrong, per-layer sums, all declared in one :class:`DeviceWindow`. At a logging step the host
reads everything in one transfer and hands a :class:`WindowSummary` to the host-side rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_convergence.stats.window import DeviceWindow


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

    Runs on the device: the flag is a 0-d bool tensor, never read here. Non-finite norms never
    enter the history.

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
        self._norms: Tensor | None = None  # [history], NaN = empty slot
        self._cursor = 0

    def _buffer(self, like: Tensor) -> Tensor:
        if self._norms is None:
            self._norms = torch.full((self.history,), math.nan, dtype=torch.float32, device=like.device)
        return self._norms

    def update(self, total_norm: Tensor) -> tuple[Tensor, Tensor]:
        """Test ``total_norm`` (0-d) against the history, then add it; return (spike, median)."""
        norms = self._buffer(total_norm)
        norm = total_norm.to(torch.float32)
        median = torch.nanmedian(norms)  # NaN while the history is empty
        enough = (~torch.isnan(norms)).sum() >= self.min_history
        finite = torch.isfinite(norm)
        spike = finite & enough & (norm > self.factor * median)
        norms[self._cursor % self.history] = torch.where(finite, norm, math.nan)
        self._cursor += 1
        return spike, median

    def state_dict(self) -> dict:
        norms = self._norms.cpu() if self._norms is not None else None
        return {"norms": norms, "cursor": self._cursor}

    def load_state_dict(self, state: dict) -> None:
        self._norms = state.get("norms")
        self._cursor = int(state.get("cursor", 0))


class GradientWindow:
    """The gradient statistics of one logging window, declared in a :class:`DeviceWindow`.

    Args:
        num_layers: number of layer groups whose norms are tracked.
        trace_capacity: how many per-step total norms are kept for logging (one window).
    """

    def __init__(self, num_layers: int, trace_capacity: int) -> None:
        self.num_layers = num_layers
        self.trace_capacity = trace_capacity
        self._trace_steps: list[int] = []
        window = self._window = DeviceWindow()
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
        total_norm: Tensor,
        spike: Tensor,
        median: Tensor,
        layer_norms: Tensor,
        layer_nonfinite: Tensor,
    ) -> None:
        """Add one optimizer step. All tensors are on one device; nothing is read on the host."""
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

    def update_loss(self, step: int, loss: Tensor) -> None:
        """Count a training loss value; non-finite ones are remembered with their first step."""
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


def _empty_summary(num_layers: int) -> WindowSummary:
    return WindowSummary(0, 0, 0, 0, 0, 0.0, 0.0, 0.0, None, None, None,
                         [math.nan] * num_layers, [0] * num_layers, [])
