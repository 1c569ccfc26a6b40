"""DataLoadingMonitor: how much of the wall time training spends waiting for its next batch."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence import tags
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.rules.data_wait import DataWaitRule, DataWaitThresholds

MIN_BATCHES = 10  # timed batches a judgement needs


class DataLoadingMonitor(ConvergenceCallback):
    """Measures the share of wall time between training batches (waiting for data) and says
    when it dominates, with the usual remedies.

    Host clocks only, read at ``on_train_batch_start`` and ``on_train_batch_end``: the wait is
    the time from the end of one batch to the start of the next, which is where Lightning fetches
    the next batch; the busy time is the time inside a batch. No device sync is added, so on an
    accelerator the busy time is the host's view: while the host runs ahead of the device, a wait
    overlaps device work and is not a stall. The first batch of each epoch (the loader's start,
    its workers' start-up) is left out. Judged every logging window that holds at least
    ``MIN_BATCHES`` timed batches (a shorter one carries over into the next), and at the end of
    fit on the last partial window if it holds as many; advice only.

    Args:
        log_every_n_steps: window length in optimizer steps; ``None`` uses the Trainer's.
        thresholds: see :class:`DataWaitThresholds`.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[DataLoadingMonitor()], logger=False)
    """

    def __init__(self, log_every_n_steps: int | None = None, thresholds: DataWaitThresholds | None = None,
                 report_window_steps: int = 500) -> None:
        super().__init__(auto_remediate=False, report_window_steps=report_window_steps,
                         log_every_n_steps=log_every_n_steps)
        if thresholds is not None and not isinstance(thresholds, DataWaitThresholds):
            raise TypeError(f"`thresholds` must be a DataWaitThresholds, got {thresholds!r}.")
        self.thresholds = thresholds or DataWaitThresholds()
        self._rule = DataWaitRule(self.thresholds)
        self._last_end: float | None = None
        self._start: float | None = None
        self._wait = 0.0
        self._busy = 0.0
        self._batches = 0
        self._first_step = 0

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_end = None  # the first fetch of an epoch starts the loader: not a steady wait

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        now = time.perf_counter()
        if self._last_end is not None:
            self._wait += now - self._last_end
            self._batches += 1
            self._start = now
        else:
            self._start = None

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._start is not None:
            self._busy += now - self._start
        # A window with few timed batches is not judged alone: one slow fetch would be its whole
        # story. It carries over into the next window.
        if (self._clock.window_ends(trainer.global_step, self.logging_cadence(trainer))
                and self._batches >= MIN_BATCHES):
            self._evaluate(trainer, trainer.global_step - 1)
        self._last_end = time.perf_counter()  # our own work above is not the loader's wait

    @override
    def _flush(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The last partial window, or a run shorter than one window, judged on what it holds.
        if self._batches >= MIN_BATCHES:
            self._evaluate(trainer, self._clock.batch_step(trainer.global_step))

    def _evaluate(self, trainer: Trainer, last_step: int) -> None:
        total = self._wait + self._busy
        if total > 0:
            log_scalars(trainer, {tags.DATA_WAIT_FRACTION: self._wait / total,
                                  tags.DATA_WAIT_MS: 1000.0 * self._wait / self._batches}, last_step)
        loader = getattr(trainer, "train_dataloader", None)
        workers = getattr(loader, "num_workers", None)
        finding = self._rule.evaluate(self._wait, self._busy, self._batches, self._first_step, last_step,
                                      workers if isinstance(workers, int) else None)
        if finding is not None:
            self.record(trainer, finding, step=last_step)
        self._wait, self._busy, self._batches = 0.0, 0.0, 0
        self._first_step = last_step + 1
