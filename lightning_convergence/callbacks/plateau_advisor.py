"""PlateauAdvisor: which regime the loss is in, in plain words, and the remedy for it.

The training loss of each step is kept on the device and read once per logging window (one
collective first under DDP, so every rank judges the same numbers and decides alike). The
validation metric is read at validation end. What to do is decided by the rules
(``rules/loss_regime``, ``rules/plateau_schedule``, ``rules/recovery``); this adapter applies it:
LR changes as a factor on whatever the user's scheduler set, snapshots and rollbacks.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau
from typing_extensions import override

from lightning_convergence import tags
from lightning_convergence.callbacks.base import ConvergenceCallback, batch_loss
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.remedies.lr_factors import LRFactors
from lightning_convergence.remedies.snapshot import Snapshot
from lightning_convergence.remedies.warmup import warmup_factor
from lightning_convergence.rules.findings import Finding
from lightning_convergence.rules.loss_regime import LossRegimeRule, OverfitRule, RegimeThresholds
from lightning_convergence.rules.plateau_schedule import PlateauSchedule
from lightning_convergence.rules.recovery import Action, RecoveryPolicy
from lightning_convergence.validation import check_bool, check_positive_int


class PlateauAdvisor(ConvergenceCallback):
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
    - ``divergence``, ``oscillation``, ``no_learning``: the recovery policy of
      :class:`~lightning_convergence.rules.recovery.RecoveryPolicy`: LR cut by
      ``divergence_factor``; on divergence a rollback to the last steady snapshot (host memory:
      about 3x the parameters with Adam), then an optional linear re-warmup over
      ``rewarmup_steps``, and a stop after ``max_recoveries`` failed recoveries in a row.
    - ``overfitting``: advice; training stops if ``stop_on_overfit``.

    Args:
        monitor: validation metric for plateau and overfitting decisions.
        mode: ``"min"`` if a lower ``monitor`` is better, else ``"max"``.
        factor, patience, threshold, threshold_mode, cooldown, min_lr, eps: as for torch's
            ``ReduceLROnPlateau`` (``patience`` counts validation checks, or logging windows
            on the training loss).
        strict: raise if ``monitor`` is never logged (else warn once and use the training loss).
        num_classes: classes of a classification task, to recognise a loss stuck at chance.
        thresholds: the regime thresholds (:class:`RegimeThresholds`).
        divergence_factor: LR multiplier on divergence and oscillation.
        rollback: roll back to the last healthy snapshot on divergence.
        snapshot_every_n_steps: steps between snapshots; ``None``: every healthy window.
        rewarmup_steps: linear re-warmup after a rollback (0: none).
        max_recoveries: failed recoveries in a row after which training stops.
        stop_on_overfit: stop training when overfitting is diagnosed.
        raise_lr_on_no_learning: raise the LR tenfold, once, on ``no_learning``.
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
        log_every_n_steps: int | None = None,
        auto_remediate: bool = False,
        report_window_steps: int = 500,
    ) -> None:
        super().__init__(auto_remediate, report_window_steps, log_every_n_steps)
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise TypeError(f"`monitor` must be a metric name or None, got {monitor!r}.")
        # The rules check their own settings (ReduceLROnPlateau's in the schedule, the recovery
        # policy's in the policy), naming the argument; the rest is checked here.
        self._schedule = PlateauSchedule(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps)
        self._policy = RecoveryPolicy(divergence_factor, rollback, snapshot_every_n_steps, rewarmup_steps,
                                      max_recoveries, raise_lr_on_no_learning)
        check_bool("strict", strict)
        check_bool("stop_on_overfit", stop_on_overfit)
        check_positive_int("num_classes", num_classes, allow_none=True)
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes!r}.")
        if thresholds is not None and not isinstance(thresholds, RegimeThresholds):
            raise TypeError(f"`thresholds` must be a RegimeThresholds, got {thresholds!r}.")
        self.monitor, self.mode, self.factor, self.patience = monitor, mode, float(factor), patience
        self.threshold, self.threshold_mode, self.cooldown = float(threshold), threshold_mode, cooldown
        self.min_lr, self.eps, self.strict, self.num_classes = float(min_lr), float(eps), strict, num_classes
        self.thresholds = thresholds or RegimeThresholds()
        self.divergence_factor, self.rollback = float(divergence_factor), rollback
        self.snapshot_every_n_steps, self.rewarmup_steps = snapshot_every_n_steps, rewarmup_steps
        self.max_recoveries, self.stop_on_overfit = max_recoveries, stop_on_overfit
        self.raise_lr_on_no_learning = raise_lr_on_no_learning
        self._regime = LossRegimeRule(self.thresholds, num_classes)
        self._overfit = OverfitRule(mode, patience=2)
        self._factors = LRFactors()
        self._losses: list[Tensor] = []
        self._steps: list[int] = []
        self._snapshot = Snapshot()
        self._ema_at_snapshot: tuple[float | None, float | None] = (None, None)
        self._use_train_loss = monitor is None
        self._user_plateau = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def factor_of(self, index: int, group: int) -> float:
        """This callback's LR factor for param group ``group`` of optimizer ``index``."""
        value = self._factors.get(index, group)
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        done = self._policy.rewarmup_progress(trainer.global_step) if trainer is not None else None
        return value if done is None else value * warmup_factor("linear", done, self.rewarmup_steps)

    # ----------------------------------------------------------------- hooks

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._user_plateau = any(isinstance(c.scheduler, ReduceLROnPlateau) for c in trainer.lr_scheduler_configs)
        if self._user_plateau and self.auto_remediate:
            rank_zero_warn("PlateauAdvisor: a ReduceLROnPlateau is configured already; plateaus are advised, not acted "
                           "on, so the LR is not reduced twice (divergence and oscillation remedies still act).",
                           category=ConvergenceWarning)
        self._losses = [loss.to(pl_module.device) for loss in self._losses]  # restored on the CPU
        if self.is_acting(trainer):
            self.own_lr(trainer, self.factor_of)
            self._apply(trainer, pl_module, self._policy.start(trainer.global_step), trainer.global_step)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss, step = batch_loss(trainer, outputs), self._clock.batch_step(trainer.global_step)
        if loss is not None:
            self._losses.append(loss)  # on the device: no host read
            self._steps.append(step)
        if self._clock.window_ends(trainer.global_step, self.logging_cadence(trainer)) and self._losses:
            self._end_window(trainer, pl_module, step)

    def _end_window(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        # One collective: every rank reaches here at the same step with as many losses, and
        # judges the losses averaged over ranks, so every rank decides alike.
        values = torch.stack(self._losses)
        losses = (trainer.strategy.reduce(values, reduce_op="mean") if trainer.world_size > 1 else values).tolist()
        findings = self._regime.evaluate(self._steps, losses)
        self._losses, self._steps = [], []
        metrics = {tags.LOSS_TRAIN_EMA: self._regime.ema, tags.LOSS_BEST_EMA: self._regime.best,
                   tags.lr_factor("plateau_advisor"): self.factor_of(0, 0)}
        log_scalars(trainer, {k: v for k, v in metrics.items() if v is not None}, step)
        for finding in findings:
            self.record(trainer, finding, step=finding.step if finding.step is not None else step)
        kinds = [f.kind for f in findings]
        if self.is_acting(trainer):
            steady = all(v == v and abs(v) != float("inf") for v in losses) and self._regime.steady
            self._apply(trainer, pl_module, self._policy.on_window(kinds, steady, step), step)
        if self._use_train_loss and self._regime.ema is not None and not {"divergence", "oscillation"} & set(kinds):
            self._plateau_check(trainer, self._regime.ema, step, "the smoothed training loss")

    def _apply(self, trainer: Trainer, pl_module: LightningModule, actions: list[Action], step: int) -> None:
        """Carry out the recovery policy's actions."""
        for action in actions:
            if action.kind == "lr_scale":
                self._scale(trainer, LRFactors.uniform(trainer.optimizers, action.factor), action.reason, step)
            elif action.kind == "snapshot":
                self._snapshot.take(pl_module, trainer.optimizers, step)
                self._ema_at_snapshot = (self._regime.ema, self._regime.slow)
            elif action.kind == "rollback":
                self._snapshot.restore(pl_module, trainer.optimizers)
                self._regime.restart_from(*self._ema_at_snapshot)
                self.record_intervention(trainer, "rollback", step, dict(action.detail))
            elif action.kind == "stop":
                self._stop(trainer, step, action.detail["failed_recoveries"])

    def _scale(self, trainer: Trainer, multipliers: dict[int, list[float]], reason: str, step: int) -> None:
        for change in self._factors.scale(trainer.optimizers, multipliers):
            self.record_intervention(trainer, "lr_scale", step, {"reason": reason, **change})

    def _stop(self, trainer: Trainer, step: int, failed: int) -> None:
        # Every rank judged the same averaged losses, so every rank stops here at the same step.
        trainer.should_stop = True
        self.record_intervention(trainer, "stop", step, {"reason": "divergence", "failed_recoveries": failed})
        seen = (f"Training diverged again after {failed} rollbacks with a lower learning rate each time; it was "
                f"stopped at step {step} because it is not recovering.")
        # Said on the console whatever the rate limit of the log (a divergence was just reported).
        rank_zero_warn(f"PlateauAdvisor: {seen}", category=ConvergenceWarning)
        self.record(trainer, Finding("divergence", "critical", seen, evidence={"failed_recoveries": failed}), step=step)

    # ----------------------------------------------------------------- validation

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self._use_train_loss or self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            self._monitor_missing(sorted(trainer.callback_metrics))
            return
        metric = torch.as_tensor(value, dtype=torch.float32).detach().reshape(())
        if trainer.world_size > 1:
            metric = trainer.strategy.reduce(metric, reduce_op="mean")  # one agreed value on every rank
        current, step = float(metric), trainer.global_step
        log_scalars(trainer, {tags.loss(self.monitor): current}, step)
        self._plateau_check(trainer, current, step, f"`{self.monitor}`")
        finding = self._overfit.update(current, self._regime.ema, step)
        if finding is not None:
            self.record(trainer, finding, step=step)
            if self.stop_on_overfit and self.is_acting(trainer):
                trainer.should_stop = True
                self.record_intervention(trainer, "stop", step, {"reason": "overfitting"})

    def _monitor_missing(self, available: list[str]) -> None:
        if self.strict:
            raise RuntimeError(f"PlateauAdvisor: `monitor={self.monitor!r}` was not logged; logged metrics: "
                               f"{available}. Log it, choose another, or pass strict=False.")
        rank_zero_warn(f"PlateauAdvisor: `monitor={self.monitor!r}` was not logged (logged: {available}); judging "
                       "plateaus on the smoothed training loss instead, and overfitting cannot be judged.",
                       category=ConvergenceWarning)
        self._use_train_loss = True

    def _plateau_check(self, trainer: Trainer, value: float, step: int, what: str) -> None:
        lrs = {i: [g["lr"] * self.factor_of(i, k) for k, g in enumerate(o.param_groups)]
               for i, o in enumerate(trainer.optimizers)}
        first = lrs.get(0, [1.0])
        new = self._schedule.step(value, first)
        if new is None or (not self._regime.progress_made and self._use_train_loss):
            return  # no progress at all: that is no_learning, which the regime rule reports
        best = self._schedule.best
        seen = f"{what} has not improved on its best {best:.4g} for more than {self.patience} checks (now {value:.4g})."
        acting = self.is_acting(trainer) and not self._user_plateau
        if acting:
            seen += f" The learning rate is multiplied by {self.factor}."
        self.record(trainer, Finding("plateau", "info" if acting else "warning", seen,
                                     evidence={"value": value, "best": best, "patience": self.patience}), step=step)
        if acting:
            ratios = [n / o if o else 1.0 for n, o in zip(new, first)]
            self._scale(trainer, {i: ratios if i == 0 else [ratios[0]] * len(v) for i, v in lrs.items()},
                        "plateau", step)

    # ----------------------------------------------------------------- end of fit and state

    @override
    def _remove_hooks(self) -> None:
        self.release_lr()
        self._snapshot.clear()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "regime": self._regime.state_dict(), "schedule": self._schedule.state_dict(),
                "overfit": self._overfit.state_dict(), "factors": self._factors.state_dict(),
                "policy": self._policy.state_dict(), "use_train_loss": self._use_train_loss,
                "losses": torch.stack(self._losses).cpu() if self._losses else None, "steps": list(self._steps)}

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        for part, name in ((self._regime, "regime"), (self._schedule, "schedule"), (self._overfit, "overfit"),
                           (self._factors, "factors")):
            part.load_state_dict(state_dict[name])
        self._policy.load_state_dict(state_dict.get("policy", {}))
        losses = state_dict.get("losses")
        self._losses = [] if losses is None else list(losses.unbind())
        self._steps = [int(s) for s in state_dict.get("steps", [])]
        self._use_train_loss = bool(state_dict.get("use_train_loss", self.monitor is None))
