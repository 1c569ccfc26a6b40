"""The base of the suite's callbacks: the shared log, the report at the end, clean teardown."""

from __future__ import annotations

import os
import weakref
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from lightning_convergence.validation import check_bool, check_positive_int
from lightning_convergence.callbacks._context import (
    RunContext,
    finish_run_context,
    run_context,
    start_run_context,
)
from lightning_convergence.recorder.console import ConvergenceWarning, print_diagnosis
from lightning_convergence.recorder.records import Diagnosis, Finding, Intervention
from lightning_convergence.recorder.tensorboard import write_diagnosis_text, write_layout


STATE_SCHEMA = 1
DEFAULT_CADENCE = 50


def report_directory(trainer: Trainer) -> str:
    """``trainer.log_dir`` as rank 0 sees it, without its broadcast.

    ``Trainer.log_dir`` broadcasts from rank 0, a collective: called on rank 0 alone (or from
    ``on_exception`` on the one rank that failed) it would hang. This repeats its rule locally.
    """
    if not trainer.loggers:
        return os.fspath(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return os.fspath(logger.log_dir)
    return os.fspath(logger.save_dir or trainer.default_root_dir)


class ConvergenceCallback(Callback):
    """Shared behaviour: record findings and interventions, write the report, remove hooks.

    Subclasses call :meth:`record` and :meth:`record_intervention`, override :meth:`_flush` to
    evaluate what they hold when fit ends, and :meth:`_remove_hooks` to drop what they registered.
    """

    def __init__(self, auto_remediate: bool = False, report_window_steps: int = 500) -> None:
        check_bool("auto_remediate", auto_remediate)
        check_positive_int("report_window_steps", report_window_steps)
        self.auto_remediate = auto_remediate
        self.report_window_steps = report_window_steps
        self._pending_records: dict | None = None
        self._trainer_ref: weakref.ref | None = None

    def logging_cadence(self, trainer: Trainer) -> int:
        """Optimizer steps between logging steps: this callback's ``log_every_n_steps``, else the
        Trainer's; with the Trainer's logging off (0) the rules still need windows, so 50."""
        return getattr(self, "log_every_n_steps", None) or trainer.log_every_n_steps or DEFAULT_CADENCE

    @property
    def source(self) -> str:
        return type(self).__name__

    def context(self, trainer: Trainer) -> RunContext:
        return run_context(trainer, self.report_window_steps)

    def is_acting(self, trainer: Trainer) -> bool:
        """Remedies act only when asked, and never in the sanity check or ``fast_dev_run``."""
        if not self.auto_remediate or trainer.sanity_checking or trainer.fast_dev_run:
            return False
        return not isinstance(trainer.logger, DummyLogger)

    def record(self, trainer: Trainer, finding: Finding, step: int | None = None) -> Diagnosis | None:
        """Add a finding to the run's log; show it if it was not rate-limited."""
        at = trainer.global_step if step is None else step
        diagnosis = Diagnosis.from_finding(finding, at, trainer.current_epoch, self.source)
        if not self.context(trainer).log.add_diagnosis(diagnosis):
            return None
        print_diagnosis(diagnosis)
        write_diagnosis_text(trainer, diagnosis)
        return diagnosis

    def record_intervention(self, trainer: Trainer, action: str, step: int, detail: dict) -> None:
        self.context(trainer).log.add_intervention(Intervention(action, step, self.source, detail))

    def write_report(self, trainer: Trainer) -> str | None:
        """Write ``convergence_report.json`` into ``trainer.log_dir`` (global rank 0 only)."""
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return None
        directory = report_directory(trainer)
        return self.context(trainer).log.write_json(os.fspath(directory), steps=trainer.global_step)

    def _flush(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate whatever is held for the current window (called when fit ends)."""

    def _remove_hooks(self) -> None:
        """Remove every hook this callback registered."""

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            start_run_context(trainer, self.report_window_steps)
            self._trainer_ref = weakref.ref(trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        context = self.context(trainer)
        if self._pending_records is not None:
            context.log.restore(self._pending_records)
            self._pending_records = None
        if not context.layout_written:
            write_layout(trainer)
            context.layout_written = True

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer, pl_module)
        self._remove_hooks()

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write_report(trainer)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # Whatever happens here must not replace the user's exception with ours.
        try:
            self._remove_hooks()
            self._flush(trainer, pl_module)
        finally:
            self.write_report(trainer)
            # Lightning does not call `teardown` after a fault: end the fit here.
            self._records_at_teardown = self._records_state(trainer)
            finish_run_context(trainer)
            self._trainer_ref = None

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()
        if stage == "fit":
            self._records_at_teardown = self._records_state(trainer)
            finish_run_context(trainer)
            self._trainer_ref = None  # a weakref would stop the callback from pickling

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"schema": STATE_SCHEMA, "records": self._records_state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("schema") != STATE_SCHEMA:
            rank_zero_warn(f"{self.source}: checkpoint state of schema {state_dict.get('schema')!r} is not "
                           f"{STATE_SCHEMA}; starting with fresh statistics.", category=ConvergenceWarning)
            return
        self._pending_records = state_dict.get("records")
        self._load_own_state(state_dict)

    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        """Restore a subclass's own part of the state (the schema is already checked)."""

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.state_key not in checkpoint.get("callbacks", {}):
            rank_zero_warn(f"{self.source}: the checkpoint holds no state for {self.state_key!r} (saved "
                           "without this callback?); starting with fresh statistics.", category=ConvergenceWarning)

    def _records_state(self, trainer: Trainer | None = None) -> dict:
        """This callback's records for its checkpointed state."""
        if trainer is None and self._trainer_ref is not None:
            trainer = self._trainer_ref()
        if trainer is None:
            return getattr(self, "_records_at_teardown", {"diagnoses": [], "interventions": []})
        return self.context(trainer).log.records_from(self.source)
