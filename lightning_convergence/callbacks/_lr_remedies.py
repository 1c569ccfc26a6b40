"""PlateauAdvisor's learning-rate remedies: a raise from the range test, a cut when the top
cause of a warning is the learning rate, rollbacks (at a window's end, or between windows when
gradients turned non-finite after finite steps), and the undo of any of them that did harm.

A mixin of :class:`~lightning_convergence.callbacks.plateau_advisor.PlateauAdvisor`, which owns
the state these methods use (its factors, check, snapshots, loss regime and probe).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from lightning_convergence.callbacks._guard import close_guards, remedy_pending
from lightning_convergence.callbacks._rollback_disk import load_rollback_checkpoint, rollback_path
from lightning_convergence.remedies.lr_factors import LRFactors
from lightning_convergence.remedies.lr_range_test import RangeTestPlan, RangeTestResult
from lightning_convergence.rules.findings import Finding
from lightning_convergence.rules.intervention_check import difference_noise
from lightning_convergence.rules.recovery import Action
from lightning_convergence.rules.remedy_choice import named_too_high, remedy_for

RANGE_TEST_SPAN = 1e6  # the probe multiplies the LR by up to this much: 10,000x too low is within reach
CUT_SPAN = 1e-4  # after a divergence the probe tries from this multiple of the LR up to the LR itself
CUT_STEPS = 0.5  # ... in this share of the probe's steps (at least 10): 4 decades, not 6, and a divergence comes
# early, when few steps are left
MAX_CUT_PICK = 0.5  # a probe for a cut that picks above this multiple of the diverged LR: the fixed cut instead
RANGE_TEST_COST = 0.25  # at most this share of the steps left in the fit goes to a probe
MIN_RANGE_RAISE = 1.5  # a pick below this multiple of the LR leaves it as it is
MAX_RANGE_TESTS = 2  # per fit: a second probe when the first raise was not enough, no more
MAX_HIGH_CUTS = 2  # per fit: LR cuts for warnings whose top cause is a learning rate too high
MAX_RAISES = 2  # per fit: raises by the update ratios' estimate (on the sweep, runs with 1 or 2 were helped;
# the one run raised 5 times was harmed)
RAISE_UNSTABLE = 0.1  # a raise is undone when the smoothed loss later rises this far above its best since


@dataclass
class RemedyCounts:
    """How often PlateauAdvisor's LR remedies acted in this fit (checkpointed with it)."""

    range_tests: int = 0
    high_cuts: int = 0
    raises: int = 0  # by the update ratios' estimate
    last_cut_step: int | None = None  # ratios measured at or before it describe the rate before
    raise_factor: float | None = None  # the last LR raise still in force (no cut since), watched
    best_after_raise: float | None = None  # the lowest smoothed loss since it
    monitor_best_after_raise: float | None = None  # the best validation metric since it

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.range_tests, self.high_cuts = int(state.get("range_tests", 0)), int(state.get("high_cuts", 0))
        self.raises, self.last_cut_step = int(state.get("raises", 0)), state.get("last_cut_step")
        self.raise_factor, self.best_after_raise = state.get("raise_factor"), state.get("best_after_raise")
        self.monitor_best_after_raise = state.get("monitor_best_after_raise")


class LRRemedies:
    """The LR remedies of PlateauAdvisor (see the module docstring)."""

    _factors: Any
    _check: Any
    _before: Any
    _regime: Any
    _probe: Any
    _policy: Any
    _probe_down: bool
    _counts: RemedyCounts
    _range_test_steps: int
    _snapshot: Any
    _losses: Any
    _said_no_rollback: bool
    divergence_factor: float
    max_snapshot_bytes: int | None

    def _scale(self, trainer: Trainer, multipliers: dict[int, list[float]], reason: str, step: int,
               detail: dict | None = None, loss_before: float | None = None, cause: str | None = None) -> None:
        """Scale the LR; a remedy's is judged at the next window against the loss now and undone
        to the state now if it hurt. ``loss_before``: a rollback came first, and ``_before``
        already holds the state from before it, at this loss."""
        judged_from = self._regime.ema if loss_before is None else loss_before
        if reason in ("learning_rate_too_low", "learning_rate_too_high", "plateau", "lr_range_test") \
                and judged_from is not None:
            # (a range test's raise answers a learning rate too low, and is blocked with it)
            if loss_before is None:
                self._before.take(trainer.lightning_module, trainer.optimizers, step)
            cause = cause or ("learning_rate_too_low" if reason == "lr_range_test" else reason)
            self._check.open(cause, step, judged_from, multipliers[0][0] if multipliers.get(0) else 1.0,
                             noise=self._loss_noise())
            self.context(trainer).lr_remedy_pending = self._check.pending is not None
        first = multipliers[0][0] if multipliers.get(0) else 1.0
        if any(f < 1 for factors in multipliers.values() for f in factors):
            self._counts.last_cut_step = step  # ratios measured before this describe the old rate
            self.context(trainer).lr_cut_step = step
            self._counts.raise_factor = None  # the rate was judged again since any raise
        elif first > 1 and reason in ("learning_rate_too_low", "lr_range_test"):
            self._counts.raise_factor, self._counts.best_after_raise = first, None
            self._counts.monitor_best_after_raise = None
        for change in self._factors.scale(trainer.optimizers, multipliers):
            self.record_intervention(trainer, "lr_scale", step, {"reason": reason, "loss_before": judged_from,
                                                                 **change, **(detail or {})})

    def _cut_if_named_too_high(self, trainer: Trainer, step: int, answered: bool) -> None:
        """A warning of any callback since the last window whose top cause is a learning rate too
        high, named by the update ratios (dead units, exploding gradients, ...; a rule's own
        evidence, such as the dead units' negative biases, names a bad initialization as well): the LR x
        ``divergence_factor``, after a rollback to the last snapshot when the smoothed loss is not
        below the snapshot's (``RecoveryPolicy.rollback_before_cut``), judged at the next window
        against the loss before both, like every LR remedy; at most
        :data:`MAX_HIGH_CUTS` per fit, one verdict at a time. Not when this window's divergence or
        oscillation was ``answered`` already, and divergence and oscillation never count here
        (their own remedy answers them)."""
        log = self.context(trainer).log.diagnoses
        seen = len(log) if self._seen_diagnoses is None else self._seen_diagnoses  # None: the first after a resume
        self._seen_diagnoses = len(log)
        kind = named_too_high(log[seen:], measured_after=self._counts.last_cut_step)
        if (kind is None or answered or self._counts.high_cuts >= MAX_HIGH_CUTS
                or not self._check.allowed("learning_rate_too_high")):
            return
        self._counts.high_cuts += 1
        # Roll back first when that loses nothing (the loss is not below the snapshot's): a run
        # that collapsed at the high rate starts again from its last good state at the lower one.
        loss, module = self._regime.ema, trainer.lightning_module
        rollback = self._policy.rollback_before_cut(step, loss)
        rolled = False
        offers = list(self.context(trainer).revive_with_cut.values())  # a rollback drops them
        if rollback is not None:
            self._before.take(module, trainer.optimizers, step)  # an undo returns to the run as it was
            rolled = self._roll_back(trainer, module, rollback, step)
            if not rolled:
                self._before.clear()
        self._scale(trainer, LRFactors.uniform(trainer.optimizers, self.divergence_factor),
                    "learning_rate_too_high", step, {"named_by": kind, "rolled_back": rolled},
                    loss_before=loss if rolled else None)
        # What goes with the cut (units that rate killed, revived): after it, so that an undo of
        # the cut (to the state kept before the rollback and the cut) undoes it too.
        # Each returns the steps its part needs before the verdict (revived units must learn first).
        restored_to = rollback.detail.get("to_step") if rolled and rollback is not None else None
        for revive in offers:
            self._check.wait(revive(trainer, step, restored_to))
        self.context(trainer).revive_with_cut.clear()

    def _apply_with_probe(self, trainer: Trainer, pl_module: LightningModule, actions: list[Action],
                          step: int) -> None:
        """Carry out the recovery policy's ``actions``; a divergence's rollback is followed by a
        probe for the cut when one fits (:meth:`_range_test_after_rollback`), else the fixed cut."""
        probe_down = self._range_test_after_rollback(trainer, actions)
        if probe_down:  # the probe sets the cut instead of the fixed factor
            actions = [a for a in actions if not (a.kind == "lr_scale" and a.reason == "divergence")]
        rolled_back = self._apply(trainer, pl_module, actions, step)
        if probe_down and rolled_back:
            self._start_range_test(trainer, pl_module, downward=True)
        elif probe_down:  # nothing to probe from: the fixed cut after all
            self._scale(trainer, LRFactors.uniform(trainer.optimizers, self.divergence_factor), "divergence", step)

    def _recover_between_windows(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """GradientNormMonitor skipped ``max_consecutive_skips`` steps of non-finite gradients in
        a row after finite ones (``RunContext.recovery_request``, the same on every rank): a
        divergence that leaves nothing to wait for, recorded as one. Answered at once as one
        found at a window's end (roll back, then a measured or fixed cut; stop after
        ``max_recoveries`` failed recoveries), and the window's losses so far, which hold the
        divergence, are dropped; when its top cause is in the user's code or data (unscaled
        inputs, ...), no learning rate answers it and the run stops, as without a rollback."""
        context = self.context(trainer)
        request, context.recovery_request = context.recovery_request, None
        self._losses.clear()
        step = trainer.global_step
        seen = (f"Gradients were NaN/Inf on {request['skipped_steps']} optimizer steps in a row up to step {step}, "
                "after finite ones: training diverged.")
        finding = self.rank(trainer, Finding("divergence", "critical", seen, evidence=dict(request)))
        if remedy_for(finding.causes) == "none":  # a bug in the code or data: no learning rate fixes it
            self.stop_training(trainer, step, "nonfinite_gradients", request, finding)
            return
        self.record(trainer, finding, step=step)
        actions = [Action(a.kind, a.reason, a.factor, {**a.detail, **request}, a.finding)
                   for a in self._policy.on_window(["divergence"], steady=False, step=step)]
        self._apply_with_probe(trainer, pl_module, actions, step)

    def _roll_back(self, trainer: Trainer, pl_module: LightningModule, action: Action, step: int) -> bool:
        """Restore the last snapshot (weights, optimizer state) and the loss regime's mark; the
        guards and the open check close (what they would restore is gone). False: no snapshot
        could be restored, said once."""
        if self._snapshot.restore(pl_module, trainer.optimizers,
                                  load=lambda path: load_rollback_checkpoint(trainer, path)) is None:
            self._say_no_rollback(trainer, step)
            return False
        self._regime.restart_from_mark()
        close_guards(self.context(trainer))
        # Revivals offered to a cut were judged on weights that are gone (a cut that rolls back
        # takes its offers before).
        self.context(trainer).revive_with_cut.clear()
        self._check.pending = None
        self.record_intervention(trainer, "rollback", step, {"reason": action.reason, **action.detail})
        return True

    def _say_no_rollback(self, trainer: Trainer, step: int) -> None:
        if not self._said_no_rollback:
            self._said_no_rollback = True  # once per fit
            self.warn(f"no rollback at step {step}: the state to roll back to ({self._snapshot.last_bytes:,} bytes "
                      f"on this rank) is above `max_snapshot_bytes` ({self.max_snapshot_bytes:,}) and no checkpoint "
                      f"could be written to {rollback_path(trainer, self.state_key)}; the other remedies go ahead.")

    @property
    def _probe_running(self) -> bool:
        return self._probe is not None and self._probe.running

    def _scheduled_lr(self, trainer: Trainer) -> float | None:
        """The first group's LR as the schedule and the other remedies set it, without ours."""
        lrs = self.context(trainer).lr_control(trainer.optimizers[0]).last_effective_lrs if trainer.optimizers else []
        own = self.factor_of(0, 0)
        return lrs[0] / own if lrs and own > 0 else None

    def _range_test_fits(self, trainer: Trainer, downward: bool = False) -> bool:
        """Whether a probe may run now: configured, none running, and its steps at most
        :data:`RANGE_TEST_COST` of those left in the fit."""
        if self._probe is None or self._probe.running or self._counts.range_tests >= MAX_RANGE_TESTS:
            return False
        left = trainer.estimated_stepping_batches - trainer.global_step
        steps = max(10, round(CUT_STEPS * self._range_test_steps)) if downward else self._range_test_steps
        return steps <= RANGE_TEST_COST * left

    def _range_test_after_rollback(self, trainer: Trainer, actions: list) -> bool:
        """Whether a divergence's rollback is followed by a probe for the cut (from
        :data:`CUT_SPAN` times the LR up to the LR that diverged) instead of the fixed
        ``divergence_factor``: when a probe fits and a learning rate too high may still be cut."""
        return (any(a.kind == "rollback" and a.reason == "divergence" for a in actions)
                and self._range_test_fits(trainer, downward=True) and self._check.allowed("learning_rate_too_high"))

    def _start_range_test(self, trainer: Trainer, pl_module: LightningModule, downward: bool) -> None:
        """Begin a probe: upward (a learning rate too low) or downward (after a divergence)."""
        steps = self._range_test_steps
        self._probe.plan = (RangeTestPlan(CUT_SPAN, 1.0, max(10, round(CUT_STEPS * steps))) if downward
                            else RangeTestPlan(1.0, RANGE_TEST_SPAN, steps))
        self._probe_down = downward
        self._probe.start(trainer, pl_module)
        self._counts.range_tests += 1

    def _after_range_test(self, trainer: Trainer, result: RangeTestResult) -> None:
        """The probe ended and the state from before it is back: apply its pick (a multiple of
        the LR before it), or say why the LR stays."""
        step, detail = trainer.global_step, {"probe_start_step": self._probe.start_step, **result.detail()}
        if self._probe_down:
            self._probe_down = False
            if result.pick is None or result.pick > MAX_CUT_PICK:  # no clear minimum below the rate that diverged
                self._scale(trainer, LRFactors.uniform(trainer.optimizers, self.divergence_factor), "divergence",
                            step, {"probe": "no pick", **detail})
            else:
                self._scale(trainer, LRFactors.uniform(trainer.optimizers, result.pick), "lr_range_test", step,
                            {"direction": "down", **detail}, cause="learning_rate_too_high")
            return
        if result.pick is None or result.pick < MIN_RANGE_RAISE:
            # The probe's steps were spent all the same: recorded, as a scale by 1.
            self.record_intervention(trainer, "lr_scale", step, {"reason": "lr_range_test", "factor": [1.0],
                                                                 "applied": False, **detail})
            return
        self._scale(trainer, LRFactors.uniform(trainer.optimizers, result.pick), "lr_range_test", step, detail)

    def _undo_raise_if_unstable(self, trainer: Trainer, pl_module: LightningModule, step: int,
                                kinds: list[str]) -> bool:
        """A raise judged harmless at its window that later destabilised the run: the smoothed
        loss rose :data:`RAISE_UNSTABLE` above its best since the raise (and no divergence or
        oscillation, whose own remedies cut the rate). The raise is taken back, after a rollback
        to the last snapshot when that loses nothing (``RecoveryPolicy.rollback_before_cut``; the
        state from just before the raise is gone), recorded as an ``undo``, and no raise follows
        in this fit."""
        counts, loss = self._counts, self._regime.ema
        if counts.raise_factor is None or loss is None or self._check.pending is not None:
            return False
        if {"divergence", "oscillation"} & set(kinds):
            return False
        best = counts.best_after_raise
        if best is None or (math.isfinite(loss) and loss < best):
            counts.best_after_raise = loss
            return False
        if math.isfinite(loss) and loss <= (1 + RAISE_UNSTABLE) * best:
            return False
        self._take_back_raise(trainer, pl_module, step, loss, {
            "loss_best_after": best, "loss_after": loss, "why": "the smoothed loss rose above its best since the raise"})
        return True

    def _undo_raise_if_validation_worse(self, trainer: Trainer, pl_module: LightningModule, step: int,
                                        current: float) -> None:
        """At a validation end (``step``: the last optimizer step), ``current`` the monitored
        metric: a raise still in force whose metric got :data:`RAISE_UNSTABLE` (of its size, in its
        direction) worse than its best since the raise is taken back as in
        :meth:`_undo_raise_if_unstable`, once no remedy of the suite waits for its verdict (the
        best is tracked meanwhile). The training loss can pass a raise's verdict while the outcome
        suffers: on the calibration sweep a transformer at chance was raised 2.58x, its training
        loss fell a little (2.31 -> 2.22) and its validation loss rose (2.13 -> 2.49); kept, the
        raise ended in a divergence and the run 1.1x behind its observed twin; taken back at that
        check, 0.97x."""
        counts = self._counts
        if counts.raise_factor is None or not math.isfinite(current):
            return
        best = counts.monitor_best_after_raise
        better = (lambda a, b: a < b) if self.mode == "min" else (lambda a, b: a > b)
        if best is None or better(current, best):
            counts.monitor_best_after_raise = current
            return
        # Worse by RAISE_UNSTABLE of its size, in the metric's direction (a metric may be negative).
        worse_by = current - best if self.mode == "min" else best - current
        if worse_by <= RAISE_UNSTABLE * abs(best) or remedy_pending(self.context(trainer)):
            return
        loss = self._regime.ema
        if self._take_back_raise(trainer, pl_module, step, loss if loss is not None else math.inf, {
                "monitor_best_after": best, "monitor_now": current,
                "why": f"`{self.monitor}` rose above its best since the raise"}):
            self._losses.clear()  # the window's losses so far came from the weights rolled back

    def _take_back_raise(self, trainer: Trainer, pl_module: LightningModule, step: int, loss: float,
                         detail: dict) -> bool:
        """Revert the raise in force (after a rollback to the last snapshot when that loses
        nothing at smoothed loss ``loss``), record an ``undo`` with ``detail``, and raise no more.
        Update ratios measured before now describe the raised rate: stale, as after a cut.
        Returns whether it rolled back."""
        counts = self._counts
        factor, counts.raise_factor = counts.raise_factor, None
        rollback = self._policy.rollback_before_cut(step, loss if math.isfinite(loss) else math.inf)
        rolled = False
        if rollback is not None:
            back = Action("rollback", "learning_rate_too_low", detail=rollback.detail)
            rolled = self._roll_back(trainer, pl_module, back, step)
        self._factors.scale(trainer.optimizers, LRFactors.uniform(trainer.optimizers, 1.0 / factor))
        self._check.block("learning_rate_too_low")
        counts.last_cut_step = self.context(trainer).lr_cut_step = step
        self.record_intervention(trainer, "undo", step, {"reason": "learning_rate_too_low", "factor": 1.0 / factor,
                                                         **detail})
        return rolled

    def _loss_noise(self) -> float:
        """The noise of the difference of two smoothed training losses, from the last window's
        batch losses around the smoothed loss (``rules.intervention_check.difference_noise``);
        0 before a window was read."""
        sigma = self._regime.batch_sigma
        return 0.0 if sigma is None else difference_noise(sigma, self._regime.thresholds.beta)

    def _undo_if_harmful(self, trainer: Trainer, pl_module: LightningModule, step: int,
                         diverged: bool = False) -> bool:
        """Judge the last LR remedy against the loss before it; undo it if it did harm. A window
        that ``diverged`` is judged at once, even when the remedy asked to wait longer."""
        verdict = self._check.judge(self._regime.ema, step, min_steps=self.logging_cadence(trainer),
                                    at_once=diverged, noise=self._loss_noise())
        if verdict is None or not verdict.harmed:
            if self._check.pending is None:
                self._before.clear()
            return False
        self._before.restore(pl_module, trainer.optimizers)
        self._before.clear()
        self.context(trainer).revive_with_cut.clear()  # offered on weights that are gone
        self._regime.restart_from(verdict.check.loss_before)
        revert = LRFactors.uniform(trainer.optimizers, 1.0 / verdict.check.factor)
        self._factors.scale(trainer.optimizers, revert)
        self.record_intervention(trainer, "undo", step, verdict.evidence())
        return True
