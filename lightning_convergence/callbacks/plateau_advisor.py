"""PlateauAdvisor: which regime the loss is in, in plain words, and the remedy for it.

The training loss of each step is kept on the device and read once per logging window (one
collective first under DDP, so every rank judges the same numbers and decides alike). The
validation metric is read at validation end. Decisions are made by the rules in ``rules/``;
LR changes go through the shared LR control, as a factor on whatever the user's scheduler set.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau
from typing_extensions import override

from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.remedies.lr_factors import LRFactors
from lightning_convergence.remedies.snapshot import Snapshot
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.rules.findings import Finding
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.rules.advice import advise
from lightning_convergence.rules.loss_regime import LossRegimeRule, OverfitRule, RegimeThresholds
from lightning_convergence.rules.plateau_schedule import PlateauSchedule
from lightning_convergence.validation import (
    check_bool,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
)

OWNER = "PlateauAdvisor"


class PlateauAdvisor(ConvergenceCallback):
    """Tells plateau, oscillation, divergence, overfitting and no learning apart, and acts.

    Regimes are judged on the training loss smoothed per step (EMA over about 10 steps) every
    logging window, and on ``monitor`` at each validation end (see
    :mod:`lightning_convergence.rules.loss_regime` for the thresholds, all relative). With
    ``auto_remediate=True``:

    - ``plateau``: the LR is multiplied by ``factor`` exactly when torch's ``ReduceLROnPlateau``
      with the same ``mode``, ``factor``, ``patience``, ``threshold``, ``threshold_mode``,
      ``cooldown``, ``min_lr`` and ``eps`` would reduce it, fed ``monitor`` at each validation end
      (or, without a validation metric and with ``strict=False``, the smoothed training loss at
      each logging window). A plateau before any progress is ``no_learning`` instead: lowering
      the LR is the wrong remedy there. If the user configured a ``ReduceLROnPlateau`` already,
      plateaus are only advised, with a warning, so the LR is never reduced twice.
    - ``divergence``: the LR is multiplied by ``divergence_factor`` and, with ``rollback``, model
      and optimizer go back to the last healthy snapshot (CPU memory: about 3x the parameters
      with Adam; taken when training starts and at the end of each healthy window, one whose
      smoothed loss is finite and at most halfway from its best to the divergence line, or
      every ``snapshot_every_n_steps`` such windows),
      optionally followed by a linear re-warmup over ``rewarmup_steps``. After
      ``max_recoveries`` rollbacks without a healthy window in between, training stops.
    - ``oscillation``: the LR is multiplied by ``divergence_factor`` (no rollback).
    - ``overfitting``: advice; training stops if ``stop_on_overfit``.
    - ``no_learning``: advice; the LR is raised tenfold once if ``raise_lr_on_no_learning``.

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
        super().__init__(auto_remediate=auto_remediate, report_window_steps=report_window_steps)
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise TypeError(f"`monitor` must be a metric name or None, got {monitor!r}.")
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}.")
        for name, value in (("factor", factor), ("divergence_factor", divergence_factor)):
            check_positive_float(name, value)
            if value >= 1:
                raise ValueError(f"`{name}` must be in (0, 1), got {value!r}.")
        check_nonnegative_int("patience", patience)
        check_nonnegative_float("threshold", threshold)
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"`threshold_mode` must be 'rel' or 'abs', got {threshold_mode!r}.")
        check_nonnegative_int("cooldown", cooldown)
        check_nonnegative_float("min_lr", min_lr)
        check_nonnegative_float("eps", eps)
        for name, value in (("strict", strict), ("rollback", rollback), ("stop_on_overfit", stop_on_overfit),
                            ("raise_lr_on_no_learning", raise_lr_on_no_learning)):
            check_bool(name, value)
        check_positive_int("num_classes", num_classes, allow_none=True)
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes!r}.")
        if thresholds is not None and not isinstance(thresholds, RegimeThresholds):
            raise TypeError(f"`thresholds` must be a RegimeThresholds, got {thresholds!r}.")
        check_positive_int("snapshot_every_n_steps", snapshot_every_n_steps, allow_none=True)
        check_nonnegative_int("rewarmup_steps", rewarmup_steps)
        check_positive_int("max_recoveries", max_recoveries)
        check_positive_int("log_every_n_steps", log_every_n_steps, allow_none=True)
        self.monitor, self.mode, self.factor, self.patience = monitor, mode, float(factor), patience
        self.threshold, self.threshold_mode, self.cooldown = float(threshold), threshold_mode, cooldown
        self.min_lr, self.eps, self.strict, self.num_classes = float(min_lr), float(eps), strict, num_classes
        self.thresholds = thresholds or RegimeThresholds()
        self.divergence_factor, self.rollback = float(divergence_factor), rollback
        self.snapshot_every_n_steps, self.rewarmup_steps = snapshot_every_n_steps, rewarmup_steps
        self.max_recoveries, self.stop_on_overfit = max_recoveries, stop_on_overfit
        self.raise_lr_on_no_learning, self.log_every_n_steps = raise_lr_on_no_learning, log_every_n_steps
        self._regime = LossRegimeRule(self.thresholds, num_classes)
        self._schedule = PlateauSchedule(mode, self.factor, patience, self.threshold, threshold_mode, cooldown,
                                         self.min_lr, self.eps)
        self._overfit = OverfitRule(mode, patience=2)
        self._factors = LRFactors()
        self._losses: list[Tensor] = []
        self._steps: list[int] = []
        self._snapshot = Snapshot()
        self._ema_at_snapshot: tuple[float | None, float | None] = (None, None)
        self._rollback_step: int | None = None  # start of the re-warmup
        self._failed_recoveries = 0
        self._raised_lr = False
        self._use_train_loss = monitor is None
        self._user_plateau = False
        self._last_window = -1
        self._stepped = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    # ----------------------------------------------------------------- LR factor

    def factor_of(self, index: int, group: int) -> float:
        value = self._factors.get(index, group)
        if self._rollback_step is not None and self.rewarmup_steps and self._trainer_ref is not None:
            trainer = self._trainer_ref()
            done = (trainer.global_step - self._rollback_step) if trainer is not None else self.rewarmup_steps
            value *= min(1.0, (done + 1) / self.rewarmup_steps)
        return value

    def _scale(self, trainer: Trainer, multipliers: dict[int, list[float]], reason: str, step: int) -> None:
        for change in self._factors.scale(trainer.optimizers, multipliers):
            self.record_intervention(trainer, "lr_scale", step, {"reason": reason, **change})

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
        if not self.is_acting(trainer):
            return
        context = self.context(trainer)
        for index, optimizer in enumerate(trainer.optimizers):
            context.lr_control(optimizer).set_owner(OWNER, lambda group, i=index: self.factor_of(i, group))
        if self.rollback and not self._snapshot.taken:
            # The weights training starts from are the first healthy state: a run that blows up
            # in its first window restarts from them with a lower LR.
            self._snapshot.take(pl_module, trainer.optimizers, trainer.global_step)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._stepped = False

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        self._stepped = True

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = trainer.global_step - 1 if self._stepped else trainer.global_step
        if isinstance(loss, Tensor) and loss.numel() == 1:
            # Lightning divides the loss by accumulate_grad_batches here: undo it. No host read.
            self._losses.append(loss.detach().reshape(()).float() * trainer.accumulate_grad_batches)
            self._steps.append(step)
        cadence = self.logging_cadence(trainer)
        if self._stepped and trainer.global_step % cadence == 0 and trainer.global_step != self._last_window:
            self._last_window = trainer.global_step
            self._end_window(trainer, pl_module, step)

    def _read_losses(self, trainer: Trainer) -> list[float]:
        """The window's losses on the host, averaged over DDP ranks in one collective (every
        rank gets here at the same step, with as many losses), so every rank judges alike."""
        values = torch.stack(self._losses)
        if trainer.world_size > 1:
            values = trainer.strategy.reduce(values, reduce_op="mean")
        return values.tolist()

    def _end_window(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        if not self._losses:
            return
        losses, steps = self._read_losses(trainer), self._steps
        self._losses, self._steps = [], []
        findings = self._regime.evaluate(steps, losses)
        metrics = {"convergence/loss/train_ema": self._regime.ema, "convergence/loss/best_ema": self._regime.best}
        metrics["convergence/lr_factor/plateau_advisor"] = self.factor_of(0, 0)
        log_scalars(trainer, {k: v for k, v in metrics.items() if v is not None}, step)
        for finding in findings:
            self.record(trainer, finding, step=finding.step if finding.step is not None else step)
            self._act_on_regime(trainer, pl_module, finding, step)
        if any(f.kind in ("divergence", "oscillation") for f in findings):
            return
        if all(math.isfinite(v) for v in losses) and self._regime.steady:
            self._healthy_window(trainer, pl_module, step)
        if self._use_train_loss and self._regime.ema is not None:
            self._plateau_check(trainer, self._regime.ema, step, "the smoothed training loss")

    def _healthy_window(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        if self._rollback_step is not None:
            self._failed_recoveries = 0  # a healthy window after a rollback: the recovery worked
            if not self.rewarmup_steps or step - self._rollback_step >= self.rewarmup_steps:
                self._rollback_step = None
        if not (self.is_acting(trainer) and self.rollback):
            return
        last = self._snapshot.step
        if last is None or self.snapshot_every_n_steps is None or step - last >= self.snapshot_every_n_steps:
            self._snapshot.take(pl_module, trainer.optimizers, step)
            self._ema_at_snapshot = (self._regime.ema, self._regime.slow)

    # ----------------------------------------------------------------- acting

    def _act_on_regime(self, trainer: Trainer, pl_module: LightningModule, finding: Finding, step: int) -> None:
        if not self.is_acting(trainer):
            return
        if finding.kind == "divergence":
            self._scale(trainer, LRFactors.uniform(trainer.optimizers, self.divergence_factor), "divergence", step)
            if self.rollback:
                self._roll_back(trainer, pl_module, step)
        elif finding.kind == "oscillation":
            self._scale(trainer, LRFactors.uniform(trainer.optimizers, self.divergence_factor), "oscillation", step)
        elif finding.kind == "no_learning" and self.raise_lr_on_no_learning and not self._raised_lr:
            self._raised_lr = True
            self._scale(trainer, LRFactors.uniform(trainer.optimizers, 10.0), "no_learning", step)

    def _roll_back(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        if not self._snapshot.taken:
            return
        if self._rollback_step is not None:
            self._failed_recoveries += 1
        if self._failed_recoveries >= self.max_recoveries:
            self._stop(trainer, step)
            return
        restored = self._snapshot.restore(pl_module, trainer.optimizers)
        self._regime.restart_from(*self._ema_at_snapshot)
        self._rollback_step = step
        self.record_intervention(trainer, "rollback", step, {
            "to_step": restored, "failed_recoveries": self._failed_recoveries,
            "rewarmup_steps": self.rewarmup_steps})

    def _stop(self, trainer: Trainer, step: int) -> None:
        # Every rank judged the same averaged losses, so every rank stops here at the same step.
        trainer.should_stop = True
        self.record_intervention(trainer, "stop", step, {"reason": "divergence",
                                                         "failed_recoveries": self._failed_recoveries})
        seen = (f"Training diverged again after {self._failed_recoveries} rollbacks with a lower learning rate "
                f"each time; it was stopped at step {step} because it is not recovering.")
        # Said on the console whatever the rate limit of the log (a divergence was just reported).
        rank_zero_warn(f"PlateauAdvisor: {seen}", category=ConvergenceWarning)
        self.record(trainer, Finding("divergence", "critical", advise("divergence", seen),
                                     evidence={"failed_recoveries": self._failed_recoveries}), step=step)

    # ----------------------------------------------------------------- validation

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self._use_train_loss or self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            available = sorted(trainer.callback_metrics)
            if self.strict:
                raise RuntimeError(f"PlateauAdvisor: `monitor={self.monitor!r}` was not logged; logged metrics: "
                                   f"{available}. Log it, choose another, or pass strict=False.")
            rank_zero_warn(f"PlateauAdvisor: `monitor={self.monitor!r}` was not logged (logged: {available}); "
                           "judging plateaus on the smoothed training loss instead, and overfitting cannot be judged.",
                           category=ConvergenceWarning)
            self._use_train_loss = True
            return
        metric = torch.as_tensor(value, dtype=torch.float32).detach().reshape(())
        if trainer.world_size > 1:
            metric = trainer.strategy.reduce(metric, reduce_op="mean")  # one agreed value on every rank
        current, step = float(metric), trainer.global_step
        log_scalars(trainer, {f"convergence/loss/{self.monitor}": current}, step)
        self._plateau_check(trainer, current, step, f"`{self.monitor}`")
        finding = self._overfit.update(current, self._regime.ema, step)
        if finding is not None:
            self.record(trainer, finding, step=step)
            if self.stop_on_overfit and self.is_acting(trainer):
                trainer.should_stop = True
                self.record_intervention(trainer, "stop", step, {"reason": "overfitting"})

    def _plateau_check(self, trainer: Trainer, value: float, step: int, what: str) -> None:
        lrs = {i: [g["lr"] * self.factor_of(i, k) for k, g in enumerate(o.param_groups)]
               for i, o in enumerate(trainer.optimizers)}
        first = lrs.get(0, [1.0])
        new = self._schedule.step(value, first)
        if new is None:
            return
        if not self._regime.progress_made and self._use_train_loss:
            return  # no progress at all: that is no_learning, which the regime rule reports
        best = self._schedule.best
        seen = (f"{what} has not improved on its best {best:.4g} for more than {self.patience} checks "
                f"(now {value:.4g}).")
        acting = self.is_acting(trainer) and not self._user_plateau
        if acting:
            seen += f" The learning rate is multiplied by {self.factor}."
        self.record(trainer, Finding("plateau", "info" if acting else "warning", advise("plateau", seen),
                                     evidence={"value": value, "best": best, "patience": self.patience}), step=step)
        if acting:
            ratios = [n / o if o else 1.0 for n, o in zip(new, first)]
            self._scale(trainer, {i: ratios if i == 0 else [ratios[0]] * len(v) for i, v in lrs.items()},
                        "plateau", step)

    # ----------------------------------------------------------------- end of fit and state

    @override
    def _remove_hooks(self) -> None:
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is not None:
            for optimizer in trainer.optimizers:
                self.context(trainer).lr_control(optimizer).remove_owner(OWNER)
        self._snapshot.clear()

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({
            "regime": self._regime.state_dict(), "schedule": self._schedule.state_dict(),
            "overfit": self._overfit.state_dict(), "factors": self._factors.state_dict(),
            "losses": torch.stack(self._losses).cpu() if self._losses else None, "steps": list(self._steps),
            "snapshot_step": self._snapshot.step, "rollback_step": self._rollback_step,
            "failed_recoveries": self._failed_recoveries, "raised_lr": self._raised_lr,
            "use_train_loss": self._use_train_loss, "last_window": self._last_window,
        })
        return state

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._regime.load_state_dict(state_dict["regime"])
        self._schedule.load_state_dict(state_dict["schedule"])
        self._overfit.load_state_dict(state_dict["overfit"])
        self._factors.load_state_dict(state_dict["factors"])
        losses = state_dict.get("losses")
        self._losses = [] if losses is None else list(losses.unbind())
        self._steps = [int(s) for s in state_dict.get("steps", [])]
        self._rollback_step = state_dict.get("rollback_step")
        self._failed_recoveries = int(state_dict.get("failed_recoveries", 0))
        self._raised_lr = bool(state_dict.get("raised_lr", False))
        self._use_train_loss = bool(state_dict.get("use_train_loss", self.monitor is None))
        self._last_window = int(state_dict.get("last_window", -1))
