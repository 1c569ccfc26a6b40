"""The base of the suite's callbacks: the shared log, the report at the end, clean teardown."""

from __future__ import annotations

import os
import weakref
from operator import attrgetter
from typing import Any, Callable, ClassVar

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers.logger import DummyLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_convergence.callbacks._trainer_reads import (LOSS_KEYS, batch_loss, current_learning_rate, over_ranks,
                                                           report_directory, zeroes_gradients)
from lightning_convergence.callbacks.step_clock import StepClock
from lightning_convergence.callbacks._context import (
    RunContext,
    finish_run_context,
    run_context,
    start_run_context,
)
from lightning_convergence.recorder.console import ConvergenceWarning, print_diagnosis
from lightning_convergence.remedies.skip_step import drop_gradients
from lightning_convergence.rules.causes import explain
from lightning_convergence.rules.consequence import ConsequenceJudge
from lightning_convergence.recorder.records import Diagnosis, Finding, Intervention
from lightning_convergence.recorder.tensorboard import write_diagnosis_text, write_layout
from lightning_convergence.validation import check_bool, check_positive_int


STATE_SCHEMA = 1
DEFAULT_CADENCE = 50


class ConvergenceCallback(Callback):
    """Shared behaviour: record findings and interventions, write the report, remove hooks.

    Subclasses call :meth:`record` and :meth:`record_intervention`, override :meth:`_flush` to
    evaluate what they hold when fit ends, and :meth:`_remove_hooks` to drop what they registered.
    The base keeps the step clock (subclasses that override ``on_train_batch_start`` or
    ``on_before_optimizer_step`` call ``super()`` first), owns this callback's LR factor through the
    shared LR control, and makes the one rank-agreed skip decision (:meth:`skip_step`).

    Args:
        auto_remediate: act on what is diagnosed; otherwise only observe.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.
        log_every_n_steps: logging and evaluation cadence in optimizer steps; ``None`` uses the
            Trainer's.
    """

    def __init__(self, auto_remediate: bool = False, report_window_steps: int = 500,
                 log_every_n_steps: int | None = None) -> None:
        check_bool("auto_remediate", auto_remediate)
        check_positive_int("report_window_steps", report_window_steps)
        check_positive_int("log_every_n_steps", log_every_n_steps, allow_none=True)
        self.auto_remediate = auto_remediate
        self.report_window_steps = report_window_steps
        self.log_every_n_steps = log_every_n_steps
        self._clock = StepClock()
        self._ending = False  # on_train_end: the last windows are judged, nothing acts any more
        self._pending_records: dict | None = None
        self._trainer_ref: weakref.ref | None = None

    def logging_cadence(self, trainer: Trainer) -> int:
        """Optimizer steps between logging steps: this callback's ``log_every_n_steps``, else the
        Trainer's; with the Trainer's logging off (0) the rules still need windows, so 50."""
        return self.log_every_n_steps or trainer.log_every_n_steps or DEFAULT_CADENCE

    #: Whether this callback judges the training loss window by window, so that anomalies of the
    #: statistics can wait for its verdict before they are called warnings (``rules.consequence``).
    judges_loss: ClassVar[bool] = False

    #: The settings that tell two instances of a class apart: their values key the callback's
    #: state in a checkpoint (Lightning's ``state_key``), so two instances restore their own.
    state_key_fields: ClassVar[tuple[str, ...]] = ()

    @property
    @override
    def state_key(self) -> str:
        # Lightning reads the key for every hook of every callback (it names the profiler's
        # action), about 40 times a step for the suite: the string is built once per set of
        # field values, and a field changed after construction still changes the key.
        fields = self.state_key_fields
        if not fields:
            return super().state_key
        values = attrgetter(*fields)(self)  # one value, or a tuple of them
        cached = getattr(self, "_state_key_cache", None)
        if cached is not None and cached[0] == values:
            return cached[1]
        key = self._generate_state_key(**dict(zip(fields, values if len(fields) > 1 else (values,))))
        self._state_key_cache = (values, key)
        return key

    @property
    def source(self) -> str:
        return type(self).__name__

    def context(self, trainer: Trainer) -> RunContext:
        return run_context(trainer, self.report_window_steps)

    def probing(self, trainer: Trainer) -> bool:
        """Whether a learning-rate range test is running: its steps are undone afterwards, so
        statistics and remedies skip them."""
        return self.context(trainer).probing

    def is_acting(self, trainer: Trainer) -> bool:
        """Remedies act only when asked, never in the sanity check or ``fast_dev_run``, and not
        once the fit is ending (a last partial window is judged, not acted on)."""
        if not self.auto_remediate or self._ending or trainer.sanity_checking or trainer.fast_dev_run:
            return False
        return not isinstance(trainer.logger, DummyLogger)

    def record(self, trainer: Trainer, finding: Finding, step: int | None = None,
               source: str | None = None) -> Diagnosis | None:
        """Add a finding to the run's log, its causes ranked from the evidence every callback of
        the suite posted (and the learning rate now); show it if it was not rate-limited.

        A warning of a statistical anomaly (``rules.consequence``) is recorded as ``info`` and
        judged at the next window of the loss, when a callback of the fit judges the loss
        (``judges_loss``): it is recorded again as a warning only if the loss did not keep
        improving, or a harmful loss kind was found. A non-finite finding that belongs to an
        event already reported is recorded as ``info`` naming it (``rules.nonfinite_event``).
        """
        context = self.context(trainer)
        finding = self.rank(trainer, finding)
        at = trainer.global_step if step is None else step
        finding = context.nonfinite.fold(finding, finding.step if finding.step is not None else at)
        source = source or self.source
        if ConsequenceJudge.holds(finding) and any(getattr(c, "judges_loss", False) for c in trainer.callbacks):
            at = finding.step if finding.step is not None else at
            finding = context.consequence.hold(finding, at, context.evidence.snapshot().get("loss_ema"), source)
        diagnosis = Diagnosis.from_finding(finding, at, trainer.current_epoch, source)
        if not self.context(trainer).log.add_diagnosis(diagnosis):
            return None
        print_diagnosis(diagnosis)
        write_diagnosis_text(trainer, diagnosis)
        return diagnosis

    def rank(self, trainer: Trainer, finding: Finding) -> Finding:
        """``finding`` with its causes ranked from the evidence every callback of the suite holds
        now (and the learning rate now): what :meth:`record` records, and what a remedy follows."""
        context = self.context(trainer)
        if finding.severity != "info":
            for post_now in context.evidence_sources:
                post_now(trainer)
        module = trainer.lightning_module
        return explain(finding, context.evidence.snapshot(
            learning_rate=current_learning_rate(trainer),
            zeroes_gradients=None if module is None else zeroes_gradients(module)))

    def record_intervention(self, trainer: Trainer, action: str, step: int, detail: dict) -> None:
        self.context(trainer).log.add_intervention(Intervention(action, step, self.source, detail))

    def stop_training(self, trainer: Trainer, step: int, reason: str, detail: dict | None = None,
                      finding: Finding | None = None) -> None:
        """Stop at the end of this step, record why, and say it on the console (whatever the
        rate limit of the log: a stop is never quiet). Call it at a point where every rank
        decided alike (from reduced numbers), so that every rank stops at the same step."""
        trainer.should_stop = True
        self.record_intervention(trainer, "stop", step, {"reason": reason, **(detail or {})})
        if finding is not None:
            rank_zero_warn(f"{self.source}: {finding.observation}", category=ConvergenceWarning)
            self.record(trainer, finding, step=step)

    def judge_consequences(self, trainer: Trainer, loss_now: float | None, kinds: list[str],
                           loss_start: float | None = None) -> None:
        """At a window of the loss: post the smoothed loss, and record as warnings the held
        anomalies that the loss shows did harm (``rules.consequence``; ``loss_start``: the loss
        at the start, for anomalies found before the first window)."""
        context = self.context(trainer)
        context.evidence.post(loss_ema=loss_now)
        for finding, step, source in context.consequence.judge(loss_now, kinds, loss_start):
            self.record(trainer, finding, step=step, source=source)

    def warn(self, text: str) -> None:
        """Say ``text`` on the console (rank zero), as a ``ConvergenceWarning`` from this callback."""
        rank_zero_warn(f"{self.source}: {text}", category=ConvergenceWarning)

    def training_loss(self, trainer: Trainer, outputs: Any, host: bool = False) -> Tensor | float | None:
        """:func:`batch_loss` of this batch (a float on the host path, with ``host``); when there is
        none, the suite says so once per fit (the loss regimes cannot be judged without it)."""
        loss = batch_loss(trainer, outputs, host=host)
        said = self.context(trainer).said
        if loss is None and "no_loss" not in said:
            said.add("no_loss")
            rank_zero_warn(f"{self.source}: no training loss found: `training_step` returned none and the module "
                           f"logged none of {list(LOSS_KEYS)} this step, so the loss regimes (divergence, "
                           "plateau, no learning) are not judged. Log it with self.log(\"train_loss\", loss).",
                           category=ConvergenceWarning)
        return loss

    def records(self) -> dict[str, list[dict]]:
        """What this callback recorded in the current (or last) fit: ``{"diagnoses": [...],
        "interventions": [...]}`` as in ``convergence_report.json`` (a copy; read-only)."""
        records = self._records_state()
        return {"diagnoses": [dict(d) for d in records["diagnoses"]],
                "interventions": [dict(i) for i in records["interventions"]]}

    # ----------------------------------------------------------------- shared remedies

    def own_lr(self, trainer: Trainer, factor: Callable[[int, int], float],
               after_step: Callable[[int], None] | None = None) -> None:
        """Apply ``factor(optimizer_index, group_index)`` around every optimizer step (and call
        ``after_step(optimizer_index)`` after it), keyed by this callback: two instances of one
        class own two factors."""
        context = self.context(trainer)
        for index, optimizer in enumerate(trainer.optimizers):
            context.lr_control(optimizer).set_owner(
                self.state_key, lambda group, i=index: factor(i, group),
                after_step=None if after_step is None else (lambda i=index: after_step(i)))

    def release_lr(self) -> None:
        """Remove this callback's LR factor (end of fit, or a fault)."""
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is not None:
            for optimizer in trainer.optimizers:
                self.context(trainer).lr_control(optimizer).remove_owner(self.state_key)

    def skip_step(self, trainer: Trainer, params: list, bad_values: Tensor, step: int, reason: str,
                  **detail: Any) -> int:
        """Skip this optimizer step on every rank if any rank counts bad values (NaN/Inf):
        every ``p.grad = None``, so momentum and Adam state do not move either.

        Args:
            bad_values: this rank's count of bad values (any shape; summed), on the device.

        Returns:
            The count summed over ranks (0: the step goes ahead).

        Note: a host read of one scalar, and under DDP one all_reduce (SUM) before it, so every
        rank decides from the same number: any rank's bad values skip the step on all. Call it
        at a point every rank reaches at the same step.
        """
        agreed = int(over_ranks(trainer, bad_values.detach().reshape(-1).double().sum(), "sum").item())
        if agreed > 0:
            drop_gradients(params)
            self.record_intervention(trainer, "skip_step", step,
                                     {"reason": reason, "nonfinite_values": agreed, **detail})
        return agreed

    def write_report(self, trainer: Trainer) -> str | None:
        """Write ``convergence_report.json`` into ``trainer.log_dir`` (global rank 0 only)."""
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return None
        directory = report_directory(trainer)
        context = self.context(trainer)
        return context.log.write_json(os.fspath(directory), steps=trainer.global_step,
                                      final_loss=context.evidence.snapshot().get("loss_ema"))

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
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._clock.start_batch()

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        self._clock.stepped()

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._ending = True
        self._flush(trainer, pl_module)
        self._ending = False
        context = self.context(trainer)
        if self.judges_loss and "loss_ema" not in context.evidence.snapshot():
            # No window of the loss was ever judged (no loss found): what waited for it is said now.
            for finding, step, source in context.consequence.release_unjudged():
                self.record(trainer, finding, step=step, source=source)
        self._remove_hooks()

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self.write_report(trainer)
        context = self.context(trainer)
        if path is not None and "report" not in context.said:  # once per fit, by the first callback to write
            context.said.add("report")
            rank_zero_info(f"lightning-convergence: {context.log.headline(trainer.global_step)} Report: {path} "
                           f"(`lightning-convergence report {os.path.dirname(path)}` shows it).")

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
        return {"schema": STATE_SCHEMA, "records": self._records_state(), "clock": self._clock.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("schema") != STATE_SCHEMA:
            rank_zero_warn(f"{self.source}: checkpoint state of schema {state_dict.get('schema')!r} is not "
                           f"{STATE_SCHEMA}; starting with fresh statistics.", category=ConvergenceWarning)
            return
        self._pending_records = state_dict.get("records")
        self._clock.load_state_dict(state_dict.get("clock", {}))
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
