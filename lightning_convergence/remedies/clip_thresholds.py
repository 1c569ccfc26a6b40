"""The thresholds of adaptive gradient clipping, learned from the run's own global norms.

Each rule takes this step's pre-clip global norm and returns the threshold to clip it to (inf:
no clip). Given a 0-d tensor it works on the device with ``where`` and no host read; given a
float (the host path, for gradients on the CPU, see :mod:`~lightning_convergence.stats.host`) it
does the same arithmetic on Python floats. Both paths keep the same state, so a checkpoint of
either restores into the other.

References:
    Seetharaman, Wichern, Pardo, Le Roux, "AutoClip: Adaptive Gradient Clipping for Source
    Separation Networks", IEEE MLSP 2020.
    Kumar, Owen, Ashkboos, Iyer, Tulchinsky, Nguyen, "ZClip: Adaptive Spike Mitigation for LLM
    Pre-Training", 2025.
"""

from __future__ import annotations

import bisect
import math
from typing import Union

import torch
from torch import Tensor

from lightning_convergence.stats.host import cpu_floats
from lightning_convergence.stats.host_window import HostWindow
from lightning_convergence.stats.window import DeviceWindow

_NORM_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_: threshold / (norm + eps)
Norm = Union[Tensor, float]  # a 0-d tensor (device path) or a float (host path)


class PercentileThreshold:
    """AutoClip: the ``percentile``-th percentile of the recent pre-clip global norms.

    The history is a ring of the last ``window`` optimizer steps on the device; a non-finite norm
    leaves an empty (NaN) slot, so it never enters the history. The paper keeps every norm; a
    window bounds memory and the per-step sort (``torch.quantile`` also refuses more than 2**24
    values) and lets the threshold follow a run whose gradient scale drifts.

    Args:
        percentile: in (0, 100]; the paper recommends 10.
        window: how many recent steps the percentile is taken over.
        include_current: the current norm is part of the history it is clipped against (the
            paper's rule). ``False`` uses the history before it, as the ``autoclip`` package does.

    Example:
        >>> import torch
        >>> rule = PercentileThreshold(percentile=50.0, window=4)
        >>> [round(rule.update(torch.tensor(v)).item(), 2) for v in [1.0, 3.0, 2.0, 10.0]]
        [1.0, 2.0, 2.0, 2.5]
    """

    def __init__(self, percentile: float = 10.0, window: int = 1000, include_current: bool = True) -> None:
        self.percentile = percentile
        self.window = window
        self.include_current = include_current
        self._history: Tensor | list[float] | None = None  # [window] float64, NaN = empty
        self._sorted: list[float] = []  # the host path: the history's finite values, sorted
        self._cursor = 0

    def _record(self, norm: Tensor) -> None:
        if self._history is None:
            self._history = torch.full((self.window,), math.nan, dtype=torch.float64, device=norm.device)
        elif isinstance(self._history, list):  # kept on the host so far
            self._history = torch.tensor(self._history, dtype=torch.float64)
        self._history = self._history.to(norm.device)  # restored from a checkpoint on the CPU
        value = torch.where(torch.isfinite(norm), norm.to(torch.float64), math.nan)
        self._history[self._cursor % self.window] = value
        self._cursor += 1

    def _quantile(self, device: torch.device) -> Tensor:
        if self._history is None:
            return torch.tensor(math.inf, dtype=torch.float64, device=device)
        threshold = torch.nanquantile(self._history, self.percentile / 100.0)  # linear, as numpy
        return torch.where(torch.isnan(threshold), math.inf, threshold)  # empty history: no clip

    def update(self, norm: Norm) -> Norm:
        """Add ``norm`` (0-d, or a float) to the history; return the threshold for this step
        (inf: none), of the same kind."""
        if isinstance(norm, float):
            return self._update_host(norm)
        if self.include_current:
            self._record(norm)
            return self._quantile(norm.device)
        threshold = self._quantile(norm.device)
        self._record(norm)
        return threshold

    def _update_host(self, norm: float) -> float:
        """:meth:`update` on floats: a ring of norms and a sorted list of its finite ones (an
        insertion and a removal per step, where the device path sorts the whole window)."""
        if not isinstance(self._history, list):
            self._history = [math.nan] * self.window if self._history is None else cpu_floats(self._history.cpu())
            self._sorted = sorted(v for v in self._history if not math.isnan(v))
        if not self.include_current:
            threshold = self._quantile_host()
        slot = self._cursor % self.window
        old = self._history[slot]
        if not math.isnan(old):
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._history[slot] = norm if math.isfinite(norm) else math.nan
        if math.isfinite(norm):
            bisect.insort(self._sorted, norm)
        self._cursor += 1
        return self._quantile_host() if self.include_current else threshold

    def _quantile_host(self) -> float:
        """``torch.nanquantile`` with linear interpolation, on the sorted finite values."""
        values = self._sorted
        if not values:
            return math.inf
        rank = self.percentile / 100.0 * (len(values) - 1)
        below = math.floor(rank)
        above = min(below + 1, len(values) - 1)
        return values[below] + (rank - below) * (values[above] - values[below])

    def state_dict(self) -> dict:
        history = self._history
        if isinstance(history, list):
            history = torch.tensor(history, dtype=torch.float64)
        return {"history": None if history is None else history.cpu(), "cursor": self._cursor}

    def load_state_dict(self, state: dict) -> None:
        self._history = state.get("history")
        self._sorted = []
        self._cursor = int(state.get("cursor", 0))


class ZScoreThreshold:
    """ZClip: clip norms whose z-score against an EMA of the norm exceeds ``z_thresh``.

    The first ``warmup_steps`` finite norms initialise the mean and (population) variance; no
    step is clipped before. Then, for a norm with ``z = (norm - mu) / (sigma + eps) > z_thresh``,
    the threshold is ``mu + z_thresh**2 * sigma / z`` (reciprocal clipping: the larger the
    outlier, the harder the clip), and the EMA is updated with the clipped value, so a spike does
    not inflate the statistics. Non-finite norms are ignored. Everything runs on the device.

    ``min_ratio`` (1: ZClip as published) adds a second condition: a norm is an outlier only when
    it is also at least ``min_ratio`` times the running mean. With a fast EMA the variance of a
    steady phase is small, so a step at 2-5x the mean already has a z-score of 4; such steps
    are ordinary on a healthy run near its best learning rate, while a gradient spike that wrecks
    a run is 100x or more (see :class:`~lightning_convergence.callbacks.autoclip.AutoClip`).

    Args:
        z_thresh: z-score above which a norm is clipped.
        alpha: EMA smoothing of mean and variance.
        eps: added to sigma in the z-score.
        warmup_steps: finite norms collected before the EMA starts.
        min_ratio: least multiple of the running mean a clipped norm has (>= 1).

    Example:
        >>> import torch
        >>> rule = ZScoreThreshold(z_thresh=2.5, warmup_steps=3)
        >>> values = [1.0, 1.2, 0.8, 1.1, 50.0]
        >>> [round(rule.update(torch.tensor(v)).item(), 3) for v in values][-1] < 50.0
        True
    """

    def __init__(self, z_thresh: float = 2.5, alpha: float = 0.97, eps: float = 1e-6, warmup_steps: int = 25,
                 min_ratio: float = 1.0) -> None:
        self.z_thresh = z_thresh
        self.min_ratio = min_ratio
        self.alpha = alpha
        self.eps = eps
        self.warmup_steps = warmup_steps
        # EMA mean and variance, finite norms seen, whether the EMA started; and the warm-up norms.
        self._state = DeviceWindow()
        for name in ("mean", "var", "count", "initialised"):
            self._state.declare(name, (), "first")
        self._warmup_size = max(warmup_steps, 1)
        self._state.declare("warmup_norms", self._warmup_size, "first")
        # Set from a host read the caller makes anyway (a logging step): once the EMA started it
        # never stops, so the warm-up's ops are skipped from then on (the same state either way).
        self.known_initialised = False

    def onset(self) -> Tensor:
        """The norm above which the next step is clipped, ``mean + z_thresh * std`` of the EMA or
        ``min_ratio * mean``, whichever is higher (0-d, on the state's device; inf before the
        warm-up ends). The clip threshold itself depends on how far above it a norm lands
        (reciprocal clipping), so this is the line to plot."""
        if not self._state.allocated:
            return torch.tensor(math.inf, dtype=torch.float64)
        state = self._state
        if isinstance(state, HostWindow):
            line = max(state["mean"] + self.z_thresh * math.sqrt(state["var"]), self.min_ratio * state["mean"])
            return torch.tensor(line if state["initialised"] > 0 else math.inf, dtype=torch.float64)
        line = torch.maximum(state["mean"] + self.z_thresh * state["var"].sqrt(), self.min_ratio * state["mean"])
        return torch.where(state["initialised"] > 0, line, math.inf)

    def initialised_flag(self) -> Tensor:
        """1.0 once the EMA started, else 0.0 (0-d, on the device): for a caller's own host read,
        which it passes back to :meth:`note_read`."""
        if not self._state.allocated:
            return torch.zeros((), dtype=torch.float64)
        return torch.as_tensor(self._state["initialised"], dtype=torch.float64)

    def note_read(self, initialised: float) -> None:
        """Tell the rule what a host read of :meth:`initialised_flag` gave."""
        self.known_initialised = self.known_initialised or initialised > 0

    def update(self, norm: Norm) -> Norm:
        """Return this step's threshold for ``norm`` (0-d, or a float; inf: no clipping), of the
        same kind, and update the EMA."""
        if isinstance(norm, float):
            return self._update_host(norm)
        if isinstance(self._state, HostWindow):  # kept on the host so far
            state = self._state.state_dict()
            self._state = _declared_like(self._state)
            self._state.load_state_dict(state, norm.device)
        state = self._state
        if not state.allocated:
            state.allocate(norm.device)
            state.set(mean=torch.zeros(()), var=torch.zeros(()), count=torch.zeros(()), initialised=torch.zeros(()),
                      warmup_norms=torch.zeros(state["warmup_norms"].shape))
        elif state.device != norm.device:
            state.allocate(norm.device)  # after a restore on the CPU
        x = norm.to(torch.float64)
        finite = torch.isfinite(x)
        mean, var = state["mean"], state["var"]
        initialised = True if self.known_initialised else state["initialised"] > 0
        std = var.sqrt()
        z = (x - mean) / (std + self.eps)
        spike = finite & (z > self.z_thresh) & (x >= self.min_ratio * mean) & initialised
        threshold = torch.where(spike, mean + self.z_thresh**2 * std / z, math.inf)
        effective = torch.where(spike, threshold, x)
        new_mean = self.alpha * mean + (1 - self.alpha) * effective
        new_var = self.alpha * var + (1 - self.alpha) * (effective - new_mean) ** 2
        if self.known_initialised:  # the warm-up is over: its ops would change nothing
            state.set(mean=torch.where(finite, new_mean, mean), var=torch.where(finite, new_var, var))
            return threshold
        buffer, count = state["warmup_norms"], state["count"]
        ema = initialised & finite
        # Warm-up: collect finite norms; the step that completes the buffer starts the EMA.
        collecting = ~initialised & finite
        slot = count.clamp(max=buffer.numel() - 1).long()
        buffer[slot] = torch.where(collecting, x, buffer[slot])
        new_count = count + collecting.to(count.dtype)
        starts = collecting & (new_count >= self.warmup_steps)
        warm_mean = buffer.mean()
        warm_var = ((buffer - warm_mean) ** 2).mean()
        state.set(
            mean=torch.where(ema, new_mean, torch.where(starts, warm_mean, mean)),
            var=torch.where(ema, new_var, torch.where(starts, warm_var, var)),
            count=new_count,
            initialised=(initialised | starts).to(torch.float64),
        )
        return threshold

    def _update_host(self, x: float) -> float:
        """:meth:`update` on floats, step for step the same arithmetic."""
        state = self._state = HostWindow.like(self._state)
        if not state.allocated:
            state.allocate()
            state.set(mean=0.0, var=0.0, count=0.0, initialised=0.0, warmup_norms=[0.0] * self._warmup_size)
        if not math.isfinite(x):
            return math.inf  # never clipped, never counted
        mean, var, initialised = state["mean"], state["var"], state["initialised"] > 0
        std = math.sqrt(var)
        z = (x - mean) / (std + self.eps)
        spike = initialised and z > self.z_thresh and x >= self.min_ratio * mean
        threshold = mean + self.z_thresh**2 * std / z if spike else math.inf
        if initialised:
            effective = threshold if spike else x
            new_mean = self.alpha * mean + (1 - self.alpha) * effective
            state.set(mean=new_mean, var=self.alpha * var + (1 - self.alpha) * (effective - new_mean) ** 2)
            return threshold
        # Warm-up: collect finite norms; the step that completes the buffer starts the EMA.
        count, size = state["count"], self._warmup_size
        state.write("warmup_norms", min(int(count), size - 1), x)
        state.set(count=count + 1)
        if count + 1 >= self.warmup_steps:
            buffer = state["warmup_norms"]
            warm_mean = sum(buffer) / size
            state.set(mean=warm_mean, var=sum((b - warm_mean) ** 2 for b in buffer) / size, initialised=1.0)
        return threshold

    def statistics(self) -> dict[str, float]:
        """``{"mean", "var", "count", "initialised"}`` of the EMA on the host (a sync point: for
        tests and reports, not for per-step code); zeros before the first norm."""
        if not self._state.allocated:
            return {"mean": 0.0, "var": 0.0, "count": 0.0, "initialised": 0.0}
        values = self._state.read()
        self.known_initialised = values["initialised"] > 0
        return {k: values[k] for k in ("mean", "var", "count", "initialised")}

    def state_dict(self) -> dict:
        return self._state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._state.load_state_dict({k: v for k, v in state.items() if v is not None})
        self.known_initialised = False


def _declared_like(window: DeviceWindow) -> DeviceWindow:
    """A device window with ``window``'s declarations and no values."""
    fresh = DeviceWindow()
    for slot in window.slots:
        fresh.declare(slot.name, slot.shape, slot.reduce)
    return fresh
