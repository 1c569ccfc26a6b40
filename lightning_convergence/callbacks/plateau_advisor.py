"""PlateauAdvisor: which regime the loss is in, in plain words, and the remedy for it; an adapter
over the rules ``loss_regime``, ``plateau_schedule`` and ``recovery``, which decide."""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from typing_extensions import override

from lightning_convergence import tags
from lightning_convergence.callbacks._trainer_reads import logged_metric, module_num_classes, over_ranks
from lightning_convergence.callbacks._guard import judge_guards, remedy_pending
from lightning_convergence.callbacks._lr_remedies import MAX_RAISES, RANGE_TEST_SPAN, LRRemedies, RemedyCounts
from lightning_convergence.callbacks._range_test import InRunRangeTest
from lightning_convergence.callbacks._rollback_disk import rollback_path, save_rollback_checkpoint
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.remedies.lr_factors import LRFactors
from lightning_convergence.remedies.lr_range_test import RangeTestPlan
from lightning_convergence.remedies.rollback_point import RollbackPoint
from lightning_convergence.remedies.snapshot import Snapshot
from lightning_convergence.rules.late_progress import LateProgressRule
from lightning_convergence.rules.loss_regime import TAIL_MIN_STEPS, LossRegimeRule, RegimeThresholds
from lightning_convergence.rules.overfit import OverfitRule
from lightning_convergence.rules.plateau_schedule import PlateauSchedule
from lightning_convergence.rules.intervention_check import InterventionCheck
from lightning_convergence.rules.recovery import Action, RecoveryPolicy
from lightning_convergence.rules.remedy_choice import raise_factor, remedy_for
from lightning_convergence.stats.step_series import StepSeries
from lightning_convergence.validation import check_bool, check_positive_int



# 4 GiB per rank: Adam's snapshot of a model up to about 350M fp32 parameters (on one rank).
DEFAULT_MAX_SNAPSHOT_BYTES = 4 * 2**30


class PlateauAdvisor(LRRemedies, ConvergenceCallback):
    """Tells plateau, oscillation, divergence, overfitting and no learning apart, and acts.

    Regimes are judged on the training loss smoothed per step (EMA over about 10 steps) every
    logging window, and on ``monitor`` at each validation end (see
    :mod:`lightning_convergence.rules.loss_regime` for the thresholds, all relative). With
    ``auto_remediate=True``:

    - ``plateau``: the LR is multiplied by ``factor`` exactly when torch's ``ReduceLROnPlateau``
      with the same settings would reduce it, fed ``monitor`` at each validation end (or the
      smoothed training loss per window when there is no such metric and ``strict=False``). A
      plateau before any progress is ``no_learning`` instead. With a user's ``ReduceLROnPlateau``
      already configured, plateaus are only advised (with a warning), never reduced twice.
    - ``divergence``, ``oscillation``, ``no_learning``, ``overfitting``: the
      :class:`~lightning_convergence.rules.recovery.RecoveryPolicy` of the arguments below (the
      rollback snapshot is held in host memory, about 3x the parameters with Adam, up to
      ``max_snapshot_bytes`` per rank; a larger state is saved as a checkpoint under
      ``trainer.log_dir``/``rollback`` at each snapshot step instead, and read back to roll back).

    Args:
        monitor: validation metric for plateau and overfitting decisions.
        mode: ``"min"`` if a lower ``monitor`` is better, else ``"max"``.
        factor, patience, threshold, threshold_mode, cooldown, min_lr, eps: as for torch's
            ``ReduceLROnPlateau`` (``patience`` counts validation checks, or logging windows
            on the training loss).
        strict: raise if ``monitor`` is never logged (else warn once and use the training loss).
        num_classes: classes of a classification task, to recognise a loss stuck at chance.
        thresholds: the regime thresholds (:class:`RegimeThresholds`).
        divergence_factor, rollback, snapshot_every_n_steps, rewarmup_steps, max_recoveries,
            stop_on_overfit, raise_lr_on_no_learning: as for :class:`RecoveryPolicy`.
        max_snapshot_bytes: the largest rollback snapshot kept in host memory on one rank (its
            model and optimizer state; under FSDP2 its own shards). Beyond it, the rollback
            point is a checkpoint written through ``trainer.save_checkpoint``; when it cannot be
            written, the advisor says so once and does not roll back. ``None``: no limit.
        range_test_steps: optimizer steps of the in-run learning-rate range test
            (:mod:`~lightning_convergence.remedies.lr_range_test`) that sets the LR when the top
            cause of a finding is a learning rate too low (multipliers 1 to 1e6 of the LR, stopped
            when the loss diverges, then everything restored exactly); ``None``: raise by the
            amount the update ratio implies instead. A probe runs only when it costs at most a
            quarter of the steps left.
        log_every_n_steps: window length; ``None`` uses the Trainer's.
        auto_remediate: act as above; otherwise only diagnose.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.

    Raises:
        ValueError: an argument is out of range or an unknown name.
        TypeError: an argument has the wrong type.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[PlateauAdvisor(monitor="val_loss", num_classes=10)], logger=False)
    """

    state_key_fields = ("monitor", "mode")
    judges_loss = True  # the anomalies the suite finds wait for its verdict on the loss
    cuts_lr_when_named_too_high = True  # DeadNeuronTracker leaves such dead units to this cut

    def __init__(
        self,
        monitor: str | None = "val_loss",
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 5,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        strict: bool = False,
        num_classes: int | None = None,
        thresholds: RegimeThresholds | None = None,
        divergence_factor: float = 0.1,
        rollback: bool = True,
        snapshot_every_n_steps: int | None = None,
        rewarmup_steps: int = 0,
        max_recoveries: int = 3,
        stop_on_overfit: bool = False,
        raise_lr_on_no_learning: bool = False,
        max_snapshot_bytes: int | None = DEFAULT_MAX_SNAPSHOT_BYTES,
        range_test_steps: int | None = 40,
        log_every_n_steps: int | None = None,
        auto_remediate: bool = False,
        report_window_steps: int = 500,
    ) -> None:
        super().__init__(auto_remediate, report_window_steps, log_every_n_steps)
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a metric name or None, got {monitor!r}.")
        if monitor == "":
            raise ValueError("`monitor` must be a metric name or None, got ''.")
        # The rules check their own settings (ReduceLROnPlateau's in the schedule, the recovery
        # policy's in the policy, the regime's in its rule), naming the argument.
        self._schedule = PlateauSchedule(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps)
        self._policy = RecoveryPolicy(divergence_factor, rollback, snapshot_every_n_steps, rewarmup_steps,
                                      max_recoveries, raise_lr_on_no_learning, stop_on_overfit)
        self._regime = LossRegimeRule(thresholds, num_classes)
        check_bool("strict", strict)
        check_positive_int("max_snapshot_bytes", max_snapshot_bytes, allow_none=True)
        self.max_snapshot_bytes = max_snapshot_bytes
        check_positive_int("range_test_steps", range_test_steps, allow_none=True)
        if range_test_steps is not None and range_test_steps < 5:
            raise ValueError(f"`range_test_steps` must be at least 5 (or None), got {range_test_steps!r}.")
        self.range_test_steps = range_test_steps

        self.monitor, self.mode, self.factor, self.patience = monitor, mode, float(factor), patience
        self.threshold, self.threshold_mode, self.cooldown = float(threshold), threshold_mode, cooldown
        self.min_lr, self.eps, self.strict, self.num_classes = float(min_lr), float(eps), strict, num_classes
        self.thresholds = self._regime.thresholds
        self.divergence_factor, self.rollback = float(divergence_factor), rollback
        self.snapshot_every_n_steps, self.rewarmup_steps = snapshot_every_n_steps, rewarmup_steps
        self.max_recoveries, self.stop_on_overfit = max_recoveries, stop_on_overfit
        self.raise_lr_on_no_learning = raise_lr_on_no_learning
        self._overfit = OverfitRule(mode, patience=2)
        self._late = LateProgressRule()
        self._factors = LRFactors()
        self._losses = StepSeries()  # the training loss of each batch, on the device
        self._snapshot = RollbackPoint(max_snapshot_bytes)
        self._said_no_rollback = False
        self._before = Snapshot()  # the state just before the last LR remedy, kept until it is judged
        self._check = InterventionCheck()
        self._use_train_loss = monitor is None
        self._probe = None if range_test_steps is None else InRunRangeTest(
            RangeTestPlan(1.0, RANGE_TEST_SPAN, num_steps=range_test_steps), owner=f"lr_range_test:{self.state_key}")
        self._counts, self._probe_down = RemedyCounts(), False  # the running probe looks for a cut
        self._range_test_steps, self._seen_diagnoses, self._window_lr = range_test_steps or 0, 0, None
        self._user_plateau = False

    def factor_of(self, index: int, group: int) -> float:
        """This callback's LR factor for param group ``group`` of optimizer ``index``."""
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        rewarmup = self._policy.rewarmup_factor(trainer.global_step) if trainer is not None else 1.0
        return self._factors.get(index, group) * rewarmup

    # ----------------------------------------------------------------- hooks

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._user_plateau = any(isinstance(c.scheduler, ReduceLROnPlateau) for c in trainer.lr_scheduler_configs)
        if self._user_plateau and self.auto_remediate:
            self.warn("a ReduceLROnPlateau is configured already; plateaus are advised, not acted on, so the LR "
                      "is not reduced twice (divergence and oscillation remedies still act).")
        self._losses.to(pl_module.device)  # restored on the CPU
        # A fresh fit reads its log from the start; a resumed one from its first window (the
        # callbacks restore their old records in their own on_train_start, after or before this).
        self._seen_diagnoses, self._window_lr = (0 if trainer.global_step == 0 else None), None
        if trainer.global_step == 0:
            self._counts = RemedyCounts()
        self.context(trainer).lr_cut_step = self._counts.last_cut_step  # a resumed fit's too
        self._regime.num_classes = self._regime.num_classes or module_num_classes(pl_module)  # as declared
        self._policy.chance_level = self._regime.chance_level
        if self.is_acting(trainer):
            self.context(trainer).recovers_divergence = self.rollback  # see GradientNormMonitor's skips
            self.own_lr(trainer, self.factor_of)
            self._apply(trainer, pl_module, self._policy.start(trainer.global_step), trainer.global_step)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._probe is not None and self._probe.running:  # its steps are undone: not part of the run
            result = self._probe.observe(trainer, pl_module, outputs)
            if result is not None:
                self._after_range_test(trainer, result)
            return
        if self.context(trainer).recovery_request is not None:  # only ever set while acting
            self._recover_between_windows(trainer, pl_module)
            return
        loss, step = self.training_loss(trainer, outputs, host=True), self._clock.batch_step(trainer.global_step)
        if loss is not None:
            self._losses.append(step, loss)  # on the device: no host read (on the host path, a float)
        if self._clock.window_ends(trainer.global_step, self.logging_cadence(trainer)) and self._losses:
            self._end_window(trainer, pl_module, step)

    def _end_window(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        # One collective (every rank is here at the same step): all judge the same averaged losses.
        steps, losses = self._losses.take(lambda values: over_ranks(trainer, values, "mean"))
        ratio = self.context(trainer).evidence.snapshot().get("update_ratio_median")
        lr_now, lr_before = self._scheduled_lr(trainer), self._window_lr
        self._window_lr, warming = lr_now, lr_now is not None and lr_before is not None and lr_now > 1.01 * lr_before
        # Acting, the regime may say no_learning (or a collapse) after 50 steps on the update ratio,
        # so that the remedy comes early; observing, it waits 150 (no early warning on runs that
        # converge later). While the scheduled LR still rises (a warmup), small updates are its doing.
        early = ratio if self.is_acting(trainer) and not warming else None
        findings = [self.rank(trainer, f) for f in self._regime.evaluate(steps, losses, early)]
        self._policy.credit_start(self._regime.initial)  # the start snapshot's loss, once known
        self._late.observe(step, self._regime.ema, ratio)
        metrics = {tags.LOSS_TRAIN_EMA: self._regime.ema, tags.LOSS_BEST_EMA: self._regime.best,
                   tags.lr_factor("plateau_advisor"): self.factor_of(0, 0)}
        log_scalars(trainer, {k: v for k, v in metrics.items() if v is not None}, step)
        for finding in findings:
            self.record(trainer, finding, step=step)  # or at the finding's own step, when it has one
        kinds = [f.kind for f in findings]
        self.judge_consequences(trainer, self._regime.ema, kinds, loss_start=self._regime.initial)
        # The other callbacks' guarded remedies (ReDo), judged on the same loss.
        context = self.context(trainer)
        context.loss_noise = self._loss_noise()  # what a guard opened before the next window compares with
        undone = judge_guards(context, trainer, self._regime.ema, step, self.logging_cadence(trainer),
                              loss_start=self._regime.initial, noise=context.loss_noise)
        for verdict in undone:
            self._regime.restart_from(verdict.check.loss_before)
        # Nothing acts once the run is stopping (a stop of another callback in this step says why).
        if (self.is_acting(trainer) and not trainer.should_stop and not undone
                and not self._undo_if_harmful(trainer, pl_module, step, diverged="divergence" in kinds)
                and not self._undo_raise_if_unstable(trainer, pl_module, step, kinds)):
            hold = {f.kind for f in findings if remedy_for(f.causes) == "none"}
            raises = [f for f in findings if remedy_for(f.causes) == "raise_lr"]
            by = raise_factor(raises[0].causes[0].evidence.get("update_ratio_median")) if raises else None
            # One remedy judged at a time across the suite: the next waits for the last one's verdict.
            free = not remedy_pending(context) and not warming
            may_raise = free and self._check.allowed("learning_rate_too_low") and self._counts.raises < MAX_RAISES
            by = by if may_raise else None
            if by is not None and self._range_test_fits(trainer):
                self._start_range_test(trainer, pl_module, downward=False)  # the LR is set when it ends
                self._policy.raised_lr, by = True, None  # instead of the opt-in tenfold raise
            actions = self._policy.on_window(kinds, self._regime.steady, step, hold, by, loss=self._regime.ema)
            self._counts.raises += by is not None
            self._apply_with_probe(trainer, pl_module, actions, step)
            answered = bool({"divergence", "oscillation"} & set(kinds)) or self._probe_running or not free
            self._cut_if_named_too_high(trainer, step, answered)
        context.lr_remedy_pending = self._check.pending is not None
        if self._use_train_loss and self._regime.ema is not None and not {"divergence", "oscillation"} & set(kinds):
            self._plateau_check(trainer, self._regime.ema, step, "the smoothed training loss")

    def _apply(self, trainer: Trainer, pl_module: LightningModule, actions: list[Action], step: int) -> bool:
        """Carry out the recovery policy's actions; True when one was a rollback that happened."""
        rolled_back = False
        for action in actions:
            if action.kind == "lr_scale":
                self._scale(trainer, LRFactors.uniform(trainer.optimizers, action.factor), action.reason, step)
            elif action.kind == "snapshot":
                # The path only when saving: trainer.log_dir is a broadcast.
                self._snapshot.take(pl_module, trainer.optimizers, step, save=lambda _: save_rollback_checkpoint(
                    trainer, rollback_path(trainer, self.state_key)))
                self._regime.mark()
            elif action.kind == "rollback":
                if self._roll_back(trainer, pl_module, action, step):
                    self._before.clear()
                    rolled_back = True
            elif action.kind == "stop":  # every rank judged the same averaged numbers
                self.stop_training(trainer, step, action.reason, action.detail, action.finding)
        return rolled_back

    # ----------------------------------------------------------------- validation

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Validation (and the early stopping after it) sees the run's weights, not a probe's.
        if self._probe_running and not trainer.sanity_checking:
            self._probe.suspend(pl_module)

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._probe_running:  # a checkpoint inside a probe (every_n_train_steps) holds the state before it
            checkpoint.update(self._probe.checkpoint_view(checkpoint))

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._probe_running:
            self._probe.resume(pl_module)  # after the metrics were read by the callbacks before this one
        if trainer.sanity_checking or self._use_train_loss or self.monitor is None or self.probing(trainer):
            return
        current, step = logged_metric(trainer, self.monitor), trainer.global_step
        if current is None:
            self._monitor_missing(sorted(trainer.callback_metrics))
            return
        log_scalars(trainer, {tags.loss(self.monitor): current}, step)
        self._plateau_check(trainer, current, step, f"`{self.monitor}`")
        if self.is_acting(trainer) and not trainer.should_stop:
            # At the last optimizer step's number, as the remedies at a window's end.
            self._undo_raise_if_validation_worse(trainer, pl_module, self._clock.batch_step(step), current)
        # The training loss of this moment (not of the last window's end): validation may run
        # far more often than the loss windows close. Under DDP one collective, on every rank.
        _, pending = self._losses.peek(lambda values: over_ranks(trainer, values, "mean"))
        finding = self._overfit.update(current, self._regime.smoothed_through(pending), step, self._regime.initial)
        if finding is not None:
            self.record(trainer, finding, step=step)
            if self.is_acting(trainer) and finding.severity != "info":  # a small rise stops nothing
                self._apply(trainer, pl_module, self._policy.on_validation([finding.kind]), step)

    def _monitor_missing(self, available: list[str]) -> None:
        if self.strict:
            raise RuntimeError(f"PlateauAdvisor: `monitor={self.monitor!r}` was not logged; logged metrics: "
                               f"{available}. Log it, choose another, or pass strict=False.")
        self.warn(f"`monitor={self.monitor!r}` was not logged (logged: {available}); judging plateaus on the "
                  "smoothed training loss instead, and overfitting cannot be judged.")
        self._use_train_loss = True

    def _plateau_check(self, trainer: Trainer, value: float, step: int, what: str) -> None:
        groups = trainer.optimizers[0].param_groups if trainer.optimizers else [{"lr": 1.0}]
        first = [g["lr"] * self.factor_of(0, k) for k, g in enumerate(groups)]  # judged on the first optimizer
        # The LR is cut only after the training loss made progress, whatever is monitored (a run
        # that never learned is not helped by a smaller LR); without progress on the training loss
        # itself, that is no_learning, which the regime reports.
        acting = (self.is_acting(trainer) and not self._user_plateau and self._regime.progress_made
                  and self._check.allowed("plateau") and not remedy_pending(self.context(trainer))
                  and not self._probe_running)
        finding, ratios = self._schedule.check(value, first, what, acting,
                                               hold=self._use_train_loss and not self._regime.progress_made)
        if finding is None:
            return
        self.record(trainer, finding, step=step)
        if acting:
            self._scale(trainer, LRFactors.led_by_first(trainer.optimizers, ratios), "plateau", step)

    # ----------------------------------------------------------------- end of fit and state

    @override
    def _flush(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The last partial window, or a run shorter than one, judged on what it holds (enough
        # steps for the regime's chunks); not after a fault, whose ranks may not all be here.
        if trainer.interrupted:
            return
        step = self._clock.batch_step(trainer.global_step)
        if len(self._losses) >= TAIL_MIN_STEPS:
            self._end_window(trainer, pl_module, step)
        finding = self._late.judge(self._regime.initial)  # was it still falling steadily?
        if finding is not None:
            self.record(trainer, finding, step=step)

    @override
    def _remove_hooks(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        self.release_lr()
        self._snapshot.clear()
        self._before.clear()

    def _parts(self) -> dict[str, Any]:
        return {"regime": self._regime, "schedule": self._schedule, "overfit": self._overfit, "late": self._late,
                "check": self._check, "factors": self._factors, "policy": self._policy, "losses": self._losses}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **{name: part.state_dict() for name, part in self._parts().items()},
                "use_train_loss": self._use_train_loss, **self._counts.state_dict()}

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict.get("losses"), dict):  # older: a tensor, "steps" beside it, no policy
            state_dict = {"policy": {}, "late": {}, **state_dict,
                          "losses": {"values": state_dict.get("losses"), "steps": state_dict.get("steps", [])}}
        for name, part in self._parts().items():
            part.load_state_dict(state_dict.get(name, {}) if name in ("late", "check") else state_dict[name])
        self._use_train_loss = bool(state_dict.get("use_train_loss", self.monitor is None))
        self._counts.load_state_dict(state_dict)
