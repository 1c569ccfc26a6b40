"""Device-side gradient bookkeeping between two logging steps, with no host sync.

Every optimizer step updates a few small tensors on the gradients' device: a spike test of the
total norm against the median of recent finite norms, counters, the first step where something
went wrong, per-layer sums. At a logging step the host reads everything as one float64 tensor
(one transfer) and hands a :class:`WindowSummary` to the host-side rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_SUMS = ("steps", "nonfinite_grad_steps", "spike_steps", "nonfinite_loss_steps", "loss_steps", "finite_loss_sum")
_MAXES = ("max_total_norm", "max_spike_ratio")
_FIRSTS = ("first_nonfinite_grad_step", "first_spike_step", "first_nonfinite_loss_step")


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
    """Accumulators for one logging window; see the module docstring.

    Args:
        num_layers: number of layer groups whose norms are tracked.
        trace_capacity: how many per-step total norms are kept for logging (one window).
    """

    def __init__(self, num_layers: int, trace_capacity: int) -> None:
        self.num_layers = num_layers
        self.trace_capacity = trace_capacity
        self._state: Tensor | None = None
        self._trace: Tensor | None = None
        self._trace_steps: list[int] = []
        self._last_median: Tensor | None = None

    def _width(self) -> int:
        return len(_SUMS) + len(_MAXES) + len(_FIRSTS) + 1 + 3 * self.num_layers

    def _ensure(self, device: torch.device) -> Tensor:
        if self._state is None:
            self._state = torch.zeros(self._width(), dtype=torch.float64, device=device)
            self._trace = torch.zeros(self.trace_capacity, dtype=torch.float64, device=device)
            self.reset()
        return self._state

    def state_dict(self) -> dict:
        """The window so far (a checkpoint may fall in the middle of one)."""
        if self._state is None:
            return {}
        n = len(self._trace_steps)
        return {"state": self._state.cpu().clone(), "trace": self._trace[:n].cpu().clone(),
                "trace_steps": list(self._trace_steps)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        if not state or state["state"].numel() != self._width():
            return  # no window saved, or one of another layout (the model changed): start afresh
        self._ensure(device)
        self._state.copy_(state["state"].to(device))
        n = min(len(state["trace_steps"]), self.trace_capacity)
        self._trace[:n] = state["trace"][:n].to(device)
        self._trace_steps = [int(s) for s in state["trace_steps"][:n]]

    def reset(self) -> None:
        """Start a new window (keeps the device buffers)."""
        if self._state is None:
            return
        self._state.zero_()
        start = len(_SUMS) + len(_MAXES)
        self._state[start : start + len(_FIRSTS)] = math.inf
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
        state = self._ensure(total_norm.device)
        nonfinite = ~torch.isfinite(total_norm)
        ones = torch.ones((), dtype=torch.float64, device=state.device)
        sums = torch.stack([ones, nonfinite.double(), spike.double(), ones * 0, ones * 0, ones * 0])
        safe_norm = torch.nan_to_num(total_norm.double(), nan=0.0, posinf=0.0)
        ratio = torch.where(spike, safe_norm / median.double(), 0.0)
        maxes = torch.stack([safe_norm, ratio])
        firsts = torch.stack([
            torch.where(nonfinite, float(step), math.inf),
            torch.where(spike, float(step), math.inf),
        ]).double()
        n_s, n_m = len(_SUMS), len(_MAXES)
        state[:n_s] += sums
        state[n_s : n_s + n_m] = torch.maximum(state[n_s : n_s + n_m], maxes)
        state[n_s + n_m : n_s + n_m + 2] = torch.minimum(state[n_s + n_m : n_s + n_m + 2], firsts)
        # The median at the first spike, for the message ("norm 812 vs median 3.1").
        median_slot = n_s + n_m + len(_FIRSTS)
        state[median_slot] = torch.where(spike & (state[median_slot] == 0), median.double(), state[median_slot])
        layers = median_slot + 1
        g = self.num_layers
        finite_layer = torch.isfinite(layer_norms)
        state[layers : layers + g] += torch.where(finite_layer, layer_norms.double(), 0.0)
        state[layers + g : layers + 2 * g] += finite_layer.double()
        state[layers + 2 * g : layers + 3 * g] += (layer_nonfinite > 0).double()
        if len(self._trace_steps) < self.trace_capacity:
            self._trace[len(self._trace_steps)] = total_norm.double()
            self._trace_steps.append(step)

    def update_loss(self, step: int, loss: Tensor) -> None:
        """Count a training loss value; non-finite ones are remembered with their first step."""
        state = self._ensure(loss.device)
        bad = ~torch.isfinite(loss.detach()).all()
        i_bad, i_count = _SUMS.index("nonfinite_loss_steps"), _SUMS.index("loss_steps")
        state[i_bad] += bad.double()
        state[i_count] += 1
        state[_SUMS.index("finite_loss_sum")] += torch.where(bad, 0.0, loss.detach().double().sum())
        i_first = len(_SUMS) + len(_MAXES) + _FIRSTS.index("first_nonfinite_loss_step")
        state[i_first] = torch.minimum(state[i_first], torch.where(bad, float(step), math.inf).double())

    def read(self, extra: Tensor | None = None) -> tuple[WindowSummary, list[float]]:
        """Read the window on the host: the one transfer per logging step.

        Args:
            extra: a small tensor of other values to bring back in the same transfer.

        Returns:
            The summary, and ``extra``'s values as floats (empty without ``extra``).
        """
        extra_values = extra.detach().reshape(-1).double() if extra is not None else None
        if self._state is None:
            return _empty_summary(self.num_layers), (extra_values.tolist() if extra_values is not None else [])
        n = len(self._trace_steps)
        parts = [self._state, self._trace[:n]]
        if extra_values is not None:
            parts.append(extra_values.to(self._state.device))
        values = torch.cat(parts).tolist()
        n_extra = 0 if extra_values is None else extra_values.numel()
        values, extra_list = values[: len(values) - n_extra], values[len(values) - n_extra :]
        n_s, n_m, n_f = len(_SUMS), len(_MAXES), len(_FIRSTS)
        sums = dict(zip(_SUMS, values[:n_s]))
        maxes = dict(zip(_MAXES, values[n_s : n_s + n_m]))
        firsts = {k: (None if math.isinf(v) else int(v)) for k, v in zip(_FIRSTS, values[n_s + n_m : n_s + n_m + n_f])}
        median = values[n_s + n_m + n_f]
        layers = n_s + n_m + n_f + 1
        g = self.num_layers
        norm_sums, counts, bad = values[layers : layers + g], values[layers + g : layers + 2 * g], values[layers + 2 * g : layers + 3 * g]
        means = [s / c if c > 0 else math.nan for s, c in zip(norm_sums, counts)]
        trace = list(zip(self._trace_steps, values[layers + 3 * g :]))
        summary = WindowSummary(
            steps=int(sums["steps"]),
            nonfinite_grad_steps=int(sums["nonfinite_grad_steps"]),
            spike_steps=int(sums["spike_steps"]),
            nonfinite_loss_steps=int(sums["nonfinite_loss_steps"]),
            loss_steps=int(sums["loss_steps"]),
            max_total_norm=maxes["max_total_norm"],
            max_spike_ratio=maxes["max_spike_ratio"],
            spike_median=median,
            layer_mean_norms=means,
            layer_nonfinite_steps=[int(b) for b in bad],
            total_norm_trace=trace,
            finite_loss_sum=sums["finite_loss_sum"],
            **firsts,
        )
        return summary, extra_list


def _empty_summary(num_layers: int) -> WindowSummary:
    return WindowSummary(0, 0, 0, 0, 0, 0.0, 0.0, 0.0, None, None, None,
                         [math.nan] * num_layers, [0] * num_layers, [])
