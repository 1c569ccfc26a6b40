"""What a CUDA device says about a window, read at logging steps only.

- Utilisation: ``torch.cuda.utilization`` (NVML: the share of the last sample period in which a
  kernel ran; needs ``pynvml``), one read per window, no sync. Without NVML, an upper bound from
  CUDA events around the sampled step: the device's span from the step's first launch to its last
  over the host's wall time of the whole step (fetch and logging included); read at the window's
  end, when the events are long done (``query()`` first: a read never waits).
- Host syncs: one step per window (the first of the window, not a logging step, where Lightning
  itself reads values) runs under ``torch.cuda.set_sync_debug_mode("warn")``; the warnings it
  raises are counted and kept from the user, the others are passed on.
- MFU: ``flops_per_batch`` (the user's, e.g. from ``measure_flops``) times the window's steps over
  its wall time, over Lightning's ``get_available_flops`` for the device and the compute dtype.

Unverified: this project's machines have no GPU. Everything here is guarded by
``torch.cuda.is_available()`` and a failure to read leaves the reading out (``None``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from lightning_convergence import tags
from lightning_convergence.rules.device_speed import DeviceReadings, model_flops_utilization
from lightning_convergence.rules.wall_time import StepWindow

_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the model computes in under Lightning's ``precision`` string.

    Example:
        >>> compute_dtype("bf16-mixed"), compute_dtype("16-mixed"), compute_dtype("32-true")
        (torch.bfloat16, torch.float16, torch.float32)
    """
    return _DTYPES.get(str(precision).split("-")[0], torch.float32)


def device_busy_bound(span_ms: float, step_s: float) -> float | None:
    """At most this share of a step kept the device busy: its span on the device (ms, from CUDA
    events around the step's work) over the host's wall time of the whole step (s), capped at 1.

    Example:
        >>> device_busy_bound(span_ms=12.0, step_s=0.048)
        0.25
    """
    if not (span_ms >= 0 and step_s > 0):
        return None
    return min(1.0, span_ms / 1000.0 / step_s)


class DeviceClock:
    """Readings of one CUDA device per window (create it with :meth:`create`)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bf16_supported = bool(torch.cuda.is_bf16_supported())
        self._catcher: Any = None
        self._caught: list | None = None
        self._previous_mode = 0
        self._syncs: float | None = None
        self._events: tuple[Any, Any] | None = None  # (start, end) CUDA events of the sampled step
        self._step_s: float | None = None  # the host's wall time of that step

    @classmethod
    def create(cls, device: torch.device) -> DeviceClock | None:
        """A clock for ``device`` if it is a CUDA device that is there, else ``None``."""
        if device.type != "cuda" or not torch.cuda.is_available():
            return None
        return cls(device)

    def begin_sample(self) -> None:
        """Count the host syncs from now to :meth:`end_sample` (one step)."""
        if self._catcher is not None:
            return
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        self._previous_mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        start = torch.cuda.Event(enable_timing=True)
        start.record()  # queued on the current stream: no sync
        self._events = (start, None)

    def end_sample(self, step_s: float | None = None) -> None:
        """Stop counting; the syncs counted are this window's reading (``step_s``: the host's wall
        time of the sampled step, all its phases)."""
        if self._catcher is None:
            return
        if self._events is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events, self._step_s = (self._events[0], end), step_s
        torch.cuda.set_sync_debug_mode(self._previous_mode)
        self._catcher.__exit__(None, None, None)
        caught, self._catcher, self._caught = self._caught or [], None, None
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        self._syncs = float(len(syncs))
        for w in caught:  # the user's own warnings are theirs
            if w not in syncs:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def read(self, window: StepWindow, flops_per_batch: float | None, precision: str,
             compute_share: float | None) -> DeviceReadings:
        """This window's readings (no device sync: NVML and host numbers only)."""
        try:
            utilization = torch.cuda.utilization(self.device) / 100.0
        except Exception:  # pynvml missing, or NVML not answering: the events' bound, if any
            utilization = self._event_bound()
        mfu = None
        if flops_per_batch:
            try:
                from lightning.fabric.utilities.throughput import get_available_flops

                peak = get_available_flops(self.device, compute_dtype(precision))
            except Exception:
                peak = None
            if peak:
                mfu = model_flops_utilization(flops_per_batch, len(window), sum(window.wall_s), float(peak))
        syncs, self._syncs = self._syncs, None
        return DeviceReadings(utilization=utilization, mfu=mfu, syncs_per_step=syncs, precision=str(precision),
                              bf16_supported=self.bf16_supported, compute_share=compute_share)

    def _event_bound(self) -> float | None:
        events, step_s, self._events = self._events, self._step_s, None
        if events is None or events[1] is None or not step_s:
            return None
        start, end = events
        if not end.query():  # still running on the device: no wait, no reading
            return None
        return device_busy_bound(start.elapsed_time(end), step_s)

    @staticmethod
    def metrics(readings: DeviceReadings) -> dict[str, float | None]:
        return {tags.SPEED_DEVICE_UTILIZATION: readings.utilization, tags.SPEED_MFU: readings.mfu,
                tags.SPEED_HOST_SYNCS: readings.syncs_per_step}

    def close(self) -> None:
        """End a sample left open (a fault mid-step)."""
        self.end_sample()
