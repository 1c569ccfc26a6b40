"""Timing helpers shared by the benchmarks: step timer, foreign-CPU probe, paired-repeat helpers.

Nothing here imports ``lightning_convergence``; the Lightning import is only for the callback base.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning
import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(ratio: float) -> str:
    """A ratio as a relative change, e.g. 1.023 -> '+2.3%'."""
    return f"{(ratio - 1.0) * 100:+.1f}%"


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """``items`` rotated left by ``shift``: ABC, BCA, CAB, ABC, ... for shift 0, 1, 2, 3, ..."""
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def wrap_timed(obj: Any, name: str, sink: list[float]) -> None:
    """Shadow ``obj.name`` with an instance attribute that appends each call's seconds to ``sink``."""
    method = getattr(obj, name)

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)

    setattr(obj, name, timed)


class ForeignCpu:
    """CPU time used by *other* processes between :meth:`start` and :meth:`stop` (Linux only).

    Busy jiffies of the whole machine (``/proc/stat``) minus this process's own (``/proc/self/stat``),
    divided by the wall time: the average number of cores something else kept busy. A benchmark on
    a shared 2-core machine uses it to notice that a measurement was disturbed.
    """

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._begin: tuple[float, float, float] | None = None
        self.cores: float | None = None

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
            with open("/proc/self/stat") as handle:
                own = handle.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
        mine = int(own[11]) + int(own[12])  # utime, stime (fields 14 and 15 of the full line)
        return time.perf_counter(), busy / self._tick, mine / self._tick

    def start(self) -> None:
        self._begin = self._sample()

    def stop(self) -> float | None:
        end = self._sample()
        if self._begin is None or end is None or end[0] <= self._begin[0]:
            self.cores = None
        else:
            wall = end[0] - self._begin[0]
            self.cores = max(0.0, ((end[1] - self._begin[1]) - (end[2] - self._begin[2])) / wall)
        return self.cores


class StepTimer(Callback):
    """Stamps ``perf_counter()`` at every ``on_train_batch_start``; step i = start[i+1] - start[i].

    Start-to-start intervals include everything Lightning does for a step, also the logger writes
    it makes after ``on_train_batch_end``. The foreign-CPU probe covers the steps from ``warmup``
    to the last stamp.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.starts: list[float] = []
        self.foreign = ForeignCpu()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())
        if len(self.starts) == self.warmup + 1:
            self.foreign.start()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.foreign.stop()

    def intervals(self) -> list[float]:
        """Seconds of each step from ``warmup`` on, up to the step before the last stamp."""
        return [b - a for a, b in zip(self.starts[self.warmup :], self.starts[self.warmup + 1 :])]


def environment() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
    }


def wait_for_quiet(max_wait_s: float, threshold: float = 0.1, sample_s: float = 0.3) -> float:
    """Wait until other processes use less than ``threshold`` cores over ``sample_s``.

    Returns the seconds waited (at most about ``max_wait_s``; then it gives up and returns).
    """
    began = time.perf_counter()
    while True:
        probe = ForeignCpu()
        probe.start()
        time.sleep(sample_s)
        load = probe.stop()
        waited = time.perf_counter() - began
        if load is None or load < threshold or waited >= max_wait_s:
            return waited


class ForwardHookTimer(Callback):
    """Times DeadNeuronTracker's forward hooks on the activation modules, summed per training step.

    Each hook the tracker registers is wrapped (same behaviour, a ``perf_counter`` pair added per
    call); its time is added to the current step's slot, opened at ``on_train_batch_start``, before
    the step's forward. Uses the tracker's private ``_sites._hook``: :meth:`wrap` returns False if
    that changed, and the forward hooks are then left out of the hook times (the whole-step ratio
    still has them).
    """

    def __init__(self, sink: list[float]) -> None:
        self.sink = sink  # seconds per step, as FitResult.hooks lists are

    def wrap(self, tracker: Callback) -> bool:
        sites = getattr(tracker, "_sites", None)
        make = getattr(sites, "_hook", None)
        if make is None:
            return False

        def timed_make(module_name: str) -> Callable[..., Any]:
            hook = make(module_name)

            def timed(module: Any, args: Any, output: Any) -> Any:
                start = time.perf_counter()
                try:
                    return hook(module, args, output)
                finally:
                    if self.sink:
                        self.sink[-1] += time.perf_counter() - start

            return timed

        sites._hook = timed_make  # hooks are made at on_train_start, after this
        return True

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.sink.append(0.0)
