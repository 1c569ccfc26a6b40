"""TrainingSpeedMonitor: where the wall time of training goes, and why it is slow, in plain words."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_convergence.callbacks import _phase_profiler
from lightning_convergence.callbacks._device_clock import DeviceClock
from lightning_convergence.callbacks._speed_metrics import run_metrics, window_metrics
from lightning_convergence.callbacks._speed_reads import batch_size, loader_settings, run_settings
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.rules.device_speed import judge_device
from lightning_convergence.rules.phase_timeline import COMPUTE_PHASES, PhaseTimeline, zero_phases
from lightning_convergence.rules.wall_time import RunTimes, SpeedThresholds, StepWindow, WallTimeRule
from lightning_convergence.validation import check_positive_float, check_positive_int

CPU_TIME_EVERY = 10  # the process's CPU time is read on one step in this many, and on a window's first
FETCH_HISTORY = 2000  # in-epoch waits kept for the run's median (at least the latest this many)


class TrainingSpeedMonitor(ConvergenceCallback):
    """Says where the wall time of training goes and why it is slow, with the knob to turn.

    Every second between ``on_train_start`` and ``on_train_end`` is charged to one phase
    (:data:`~lightning_convergence.rules.phase_timeline.PHASES`): the wait for a batch within an
    epoch and at an epoch's start (the loader's workers starting and stopping), forward, backward,
    the optimizer step, validation, checkpoint writing, logging, every callback's hooks (this one
    included) and garbage-collection pauses (from ``gc.callbacks``, so a pause is never blamed on
    the phase it interrupted). Host clocks only: the hooks mark the phases of a step, and a
    stand-in for the Trainer's profiler (which forwards every call to it, so ``profiler="simple"``
    still reports) marks what no hook sees: the fetch, checkpoints, callbacks, and the start of
    validation before its loader's iterator. No device sync on a step that does not log.

    Judged by :class:`~lightning_convergence.rules.wall_time.WallTimeRule`: the steady loader on
    medians per logging window of at least ``thresholds.min_steps`` steps (a shorter window
    carries over; a short last one joins the window before it), on a CPU only when the process
    got the CPU while it computed (a busy machine is not a slow loader); and the run's overheads
    (training and validation loader restarts, validation, logging and other callbacks,
    checkpoints) on its cumulative time, each event at its median cost, once they recur and at
    the end of fit. Advice only: nothing in training changes. Timings start afresh on resume.

    Per window it logs ``convergence/speed/share/<phase>``, the median step time, samples/s
    (tokens/s with ``sequence_length``) and, on a CPU, the process's CPU share while computing;
    at the end, ``convergence/speed/run_share/<phase>``; :meth:`breakdown` returns the whole run's.
    On a GPU (unverified here: this project's machines have none) it reads, per window, NVML's
    utilisation (or a bound from CUDA events around one sampled step, read when done), the host
    syncs of that step (``torch.cuda.set_sync_debug_mode``) and, with ``flops_per_batch``, the
    model FLOPs utilisation against Lightning's table of peak FLOPs for the precision in use.

    Args:
        log_every_n_steps: window length in optimizer steps; ``None`` uses the Trainer's.
        thresholds: see :class:`~lightning_convergence.rules.wall_time.SpeedThresholds`.
        sequence_length: tokens per sample, for tokens/s.
        flops_per_batch: FLOPs of one training step (forward and backward), e.g. from
            ``lightning.fabric.utilities.throughput.measure_flops``; gives the MFU on a GPU.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.
        clock: wall clock in seconds (``time.perf_counter``); injected by tests.
        cpu_clock: the process's CPU time in seconds (``time.process_time``); injected by tests.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[TrainingSpeedMonitor()], logger=False)

    References:
        PyTorch, "Performance Tuning Guide"; Lightning's ``ThroughputMonitor`` and
        ``measure_flops`` (MFU = achieved FLOP/s over the device's peak for the dtype).
    """

    def __init__(self, log_every_n_steps: int | None = None, thresholds: SpeedThresholds | None = None,
                 sequence_length: int | None = None, flops_per_batch: float | None = None,
                 report_window_steps: int = 500, clock: Callable[[], float] | None = None,
                 cpu_clock: Callable[[], float] | None = None) -> None:
        super().__init__(auto_remediate=False, report_window_steps=report_window_steps,
                         log_every_n_steps=log_every_n_steps)
        if thresholds is not None and not isinstance(thresholds, SpeedThresholds):
            raise TypeError(f"`thresholds` must be a SpeedThresholds, got {thresholds!r}.")
        check_positive_int("sequence_length", sequence_length, allow_none=True)
        if flops_per_batch is not None:
            check_positive_float("flops_per_batch", flops_per_batch)
        for name, value in (("clock", clock), ("cpu_clock", cpu_clock)):
            if value is not None and not callable(value):
                raise TypeError(f"`{name}` must be a callable returning seconds, got {value!r}.")
        self.thresholds = thresholds or SpeedThresholds()
        self.sequence_length = sequence_length
        self.flops_per_batch = flops_per_batch
        self.clock = clock
        self.cpu_clock = cpu_clock
        self._rule = WallTimeRule(self.thresholds)
        self._reset_run()

    def _reset_run(self) -> None:
        self._timeline = PhaseTimeline(self.clock or time.perf_counter)
        self._window, self._previous = StepWindow(), StepWindow()
        self._window_from = zero_phases()  # the timeline's totals when the window began
        self._window_first_step = 0
        self._fetches: list[float] = []
        self._epoch_starts: list[float] = []
        self._steps = self._validations = self._checkpoints = 0
        self._validation_s: list[float] = []  # each validation run's wall time, and each checkpoint's
        self._checkpoint_s: list[float] = []
        self._validation_seen = self._checkpoint_from = 0.0
        self._validation_from: float | None = None
        self._validation_starts: list[float] = []
        self._batch_in_epoch, self._start_batches = 0, 1
        self._callbacks_s: dict[str, float] = {}
        self._own_s = 0.0
        self._by_key: dict[str, Callback] = {}
        self._callback_names: dict[str, tuple[str, bool]] = {}  # action name -> (class name, one of the suite)
        self._open_callbacks: list[tuple[str, float]] = []
        self._batch_wall = 0.0
        self._batch_cpu: float | None = None
        self._samples = self._total_samples = 0
        self._precision: str | None = None  # and the device type, read at on_train_start
        self._device_type: str | None = None
        self._profiler: _phase_profiler.PhaseProfiler | None = None
        self._device: DeviceClock | None = None

    def _wall(self) -> float:
        return (self.clock or time.perf_counter)()

    def _cpu(self) -> float:
        return (self.cpu_clock or time.process_time)()

    # ------------------------------------------------------------------ marks

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._reset_run()
            self._by_key = {c.state_key: c for c in trainer.callbacks}
            self._profiler = _phase_profiler.install(trainer, self)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._timeline.start("other")
        self._window_from = dict(self._timeline.totals)
        self._window_first_step = trainer.global_step
        if self._timeline.gc_callback not in gc.callbacks:
            gc.callbacks.append(self._timeline.gc_callback)
        self._device = DeviceClock.create(pl_module.device)
        self._precision, self._device_type = str(trainer.precision), trainer.strategy.root_device.type

    def action_started(self, kind: str, name: str) -> None:
        """A marked action of Lightning's began (see :mod:`._phase_profiler`)."""
        timeline = self._timeline
        if not timeline.running:
            return
        if kind == "fetch":
            timeline.switch("epoch_start" if self._batch_in_epoch < self._start_batches else "fetch")
        elif kind == "callback":
            self._open_callbacks.append((name, timeline.push("callbacks")))
        elif kind == "checkpoint":
            self._checkpoints += 1
            self._checkpoint_from = timeline.totals["checkpointing"]
            timeline.push("checkpointing")
        elif kind == "optimizer":
            timeline.push("optimizer")
        elif kind == "validation":
            self._validation_begins()

    def action_stopped(self, kind: str, name: str) -> None:
        """A marked action of Lightning's ended."""
        if not self._timeline.running or kind not in ("callback", "checkpoint", "optimizer"):
            return
        now = self._timeline.pop()
        if kind == "checkpoint":
            self._checkpoint_s.append(self._timeline.totals["checkpointing"] - self._checkpoint_from)
        if kind == "callback" and self._open_callbacks and self._open_callbacks[-1][0] == name:
            _, started = self._open_callbacks.pop()
            who, ours = self._callback_names[name]
            self._callbacks_s[who] = self._callbacks_s.get(who, 0.0) + now - started
            if ours:
                self._own_s += now - started

    def times_callback(self, name: str) -> bool:
        """Whether a callback action is timed: only hooks its class implements (see
        :mod:`._phase_profiler`); remembers whose it is."""
        key, hook = _phase_profiler.callback_of(name), name.rsplit(".", 1)[-1]
        callback = self._by_key.get(key)
        if callback is None:
            return False
        self._callback_names[name] = (type(callback).__name__, isinstance(callback, ConvergenceCallback))
        return getattr(type(callback), hook, None) is not getattr(Callback, hook, None)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Until the epoch's first batches are in: the loader (re)starting. Workers that start with
        # the epoch each deliver their first batch late, so each of their first batches counts.
        loader = loader_settings(trainer)
        restarting = loader.num_workers and not loader.persistent_workers
        self._start_batches = max(1, loader.num_workers or 1) if restarting else 1
        self._batch_in_epoch = 0
        self._epoch_starts.append(0.0)
        self._timeline.switch("epoch_start")

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._timeline.switch("forward")
        self._samples = batch_size(batch)
        self._batch_wall = self._wall()
        # The CPU time on one step in CPU_TIME_EVERY, and on a window's first: right after a
        # training step a CPU-time clock costs 6 to 12 us (a system call that sums the time of
        # every thread of the process), against under 1 us for the wall clock.
        sampled = not self._window or trainer.global_step % CPU_TIME_EVERY == 0
        self._batch_cpu = self._cpu() if sampled else None
        if self._device is not None and trainer.global_step % self.logging_cadence(trainer) == 0:
            self._device.begin_sample()  # the first step of a window: not a logging step

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        self._timeline.switch("backward")

    @override
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._timeline.switch("forward")  # back in the user's step (manual optimisation) until the next mark

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        if pl_module.automatic_optimization:  # manual: the profiler's `optimizer_step` brackets it
            self._timeline.switch("optimizer")

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._timeline.running:
            return
        step = self._timeline.take_step()
        self._timeline.switch(self._between)  # the logger connector's work follows, then the next fetch
        self._steps += 1
        if self._device is not None:
            self._device.end_sample(sum(step.values()))
        self._batch_in_epoch += 1
        self._total_samples += self._samples
        if step["epoch_start"] > 0 and self._epoch_starts:
            self._epoch_starts[-1] += step["epoch_start"]  # the loader starting: not a steady wait
        else:
            cpu = None if self._batch_cpu is None else self._cpu() - self._batch_cpu
            self._window.add(step["fetch"], sum(step[p] for p in COMPUTE_PHASES), cpu,
                             self._wall() - self._batch_wall, sum(step.values()), self._samples)
            self._fetches.append(step["fetch"])
            if len(self._fetches) > 2 * FETCH_HISTORY:
                del self._fetches[:-FETCH_HISTORY]
        if self._clock.window_ends(trainer.global_step, self.logging_cadence(trainer)):
            self._close_window(trainer, trainer.global_step - 1, at_end=False)

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation_begins()

    def _validation_begins(self) -> None:
        # Marked before the validation loader's iterator starts (Lightning zeroes the gradients
        # first), else at on_validation_start: the wait for the first batch is the loader's start.
        now = self._timeline.switch("validation")
        if self._validation_from is None:
            self._validation_from = now

    @override
    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        started = self._validation_from
        if started is not None and math.isfinite(started) and not trainer.sanity_checking and self._timeline.running:
            self._validation_starts.append(self._wall() - started)
            self._validation_from = math.inf  # this run's start is measured

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and self._timeline.running:
            self._validations += 1
            self._validation_from = None
            self._timeline.switch(self._between)
            spent = self._timeline.totals["validation"]
            self._validation_s.append(spent - self._validation_seen)
            self._validation_seen = spent

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._timeline.switch(self._between)

    @property
    def _between(self) -> str:
        """The phase between batches: logging, until the profiler marks the next fetch; without
        those marks (no profiler to stand in for) the whole gap is charged to the fetch."""
        return "logging" if self._profiler is not None else "fetch"

    # ------------------------------------------------------------------ judgements

    def _close_window(self, trainer: Trainer, last_step: int, at_end: bool) -> None:
        window = self._window
        if len(window) < self.thresholds.min_steps and not at_end:
            return  # too few steps to judge alone: they carry over into the next window
        if len(window) < self.thresholds.min_steps:
            window = StepWindow()  # a short last window joins the one before it
            window.extend(self._previous)
            window.extend(self._window)
        loader = loader_settings(trainer)
        if len(window):
            self._log_window(trainer, window, last_step)
            finding = self._rule.judge_loader(window, loader, self._window_first_step, last_step)
            if finding is not None:
                self.record(trainer, finding, step=last_step)
            if self._device is not None:  # a CUDA device (unverified here: no GPU on this project's machines)
                phases = self._window_phases()
                total = sum(phases.values())
                compute = sum(phases[p] for p in COMPUTE_PHASES) / total if total > 0 else None
                readings = self._device.read(window, self.flops_per_batch, trainer.precision, compute)
                log_scalars(trainer, {k: v for k, v in self._device.metrics(readings).items() if v is not None},
                            last_step)
                finding = judge_device(readings, self._window_first_step, last_step)
                if finding is not None:
                    self.record(trainer, finding, step=last_step)
        # The run's overheads, once they have recurred (a second epoch, validation or checkpoint)
        # or the run is long (a single long epoch); said once per report window per part.
        recurred = max(len(self._epoch_starts), self._validations, self._checkpoints) >= 2
        if at_end or recurred or self._steps >= 10 * self.thresholds.min_steps:
            for found in self._rule.judge_run(self.run_times(), loader, run_settings(trainer)):
                self.record(trainer, found, step=last_step)
        if len(self._window):
            self._previous = self._window
        self._window, self._window_from = StepWindow(), dict(self._timeline.totals)
        self._window_first_step = last_step + 1

    def _window_phases(self) -> dict[str, float]:
        """Seconds per phase since the window began."""
        return {p: s - self._window_from.get(p, 0.0) for p, s in self._timeline.totals.items()}

    def _log_window(self, trainer: Trainer, window: StepWindow, step: int) -> None:
        on_cpu = trainer.strategy.root_device.type == "cpu"
        log_scalars(trainer, window_metrics(window.summary(), self._window_phases(), self.sequence_length, on_cpu),
                    step)

    @override
    def _flush(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._timeline.running:
            self._timeline.stop()
        last_step = self._clock.batch_step(trainer.global_step)
        self._close_window(trainer, last_step, at_end=True)
        log_scalars(trainer, run_metrics(self.run_times()), max(0, last_step))  # next to the windows' shares

    def run_times(self) -> RunTimes:
        """The whole run so far: seconds per phase, epoch starts, counts."""
        return RunTimes(phases=dict(self._timeline.totals), epoch_starts_s=list(self._epoch_starts),
                        epoch_start_batches=self._start_batches,
                        steady_fetch_s=statistics.median(self._fetches) if self._fetches else 0.0,
                        steps=self._steps, validations=self._validations, checkpoints=self._checkpoints,
                        validation_s=list(self._validation_s), checkpoint_s=list(self._checkpoint_s),
                        validation_starts_s=list(self._validation_starts),
                        callbacks_s=dict(self._callbacks_s), own_callbacks_s=self._own_s,
                        suite_callbacks=frozenset(n for n, ours in self._callback_names.values() if ours),
                        samples=self._total_samples, sequence_length=self.sequence_length,
                        precision=self._precision, device=self._device_type)

    def breakdown(self) -> dict:
        """Where the wall time of the current (or last) fit went: its wall time in seconds, the
        share of each phase, validations and checkpoints counted, the costliest callbacks in ms."""
        return WallTimeRule.breakdown(self.run_times())

    # ------------------------------------------------------------------ teardown

    @override
    def _remove_hooks(self) -> None:
        if self._timeline.gc_callback in gc.callbacks:
            gc.callbacks.remove(self._timeline.gc_callback)
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is not None:
            _phase_profiler.uninstall(trainer, self._profiler)
        self._profiler = None
        if self._device is not None:
            self._device.close()
        self._device = None
