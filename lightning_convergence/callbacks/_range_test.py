"""The learning-rate range test inside a fit: a probe over the next optimizer steps, then the
exact state from before it.

While the probe runs, the suite's other callbacks pause (``RunContext.probing``): its steps are
not part of the run they judge. Each probe step goes through Lightning's own loop (precision,
gradient accumulation, DDP's gradient all-reduce, the user's clipping), so the curve is the one
the run itself would see, except for AutoClip's clipping, paused with the suite's statistics
(InputSanityChecker's skip of a NaN batch and TrainingSpeedMonitor's clocks go on). The probe owns
one more factor of the shared LR control: the multiplier of the step, on top of the scheduler's
LR and every other factor. WarmupScheduler's and the rollback's re-warmup counters do not advance
while it runs; an LR schedule stepped per batch does, and is put back with the rest.

Validation and checkpoints never see a probe's weights: during a validation run inside a probe
the weights from before it are put in (:meth:`InRunRangeTest.suspend`, :meth:`~InRunRangeTest.resume`:
two copies of the weights), and a checkpoint written during one holds the state from before it
(:meth:`InRunRangeTest.checkpoint_view`).

Cost: ``plan.num_steps`` optimizer steps at most (fewer when the loss diverges), one host read
and, under DDP, one all_reduce of the loss per probe step, and an :class:`ExactSnapshot` (about
3x the parameters in host memory with Adam) held while it runs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from lightning_convergence.callbacks._context import run_context
from lightning_convergence.callbacks._trainer_reads import batch_loss, over_ranks
from lightning_convergence.remedies.lr_range_test import RangeCurve, RangeTestPlan, RangeTestResult, suggest
from lightning_convergence.remedies.snapshot import ExactSnapshot

OWNER = "lr_range_test"


class InRunRangeTest:
    """Runs one range test at a time over the fit's next optimizer steps.

    Args:
        plan: the multipliers of the learning rate to try (relative to the effective LR when the
            probe starts), the smoothing and the stop.
        owner: the key of its factor in the shared LR control (one per callback instance).

    Call :meth:`start` at a batch end, :meth:`observe` at every following batch end until it
    returns a result, and :meth:`cancel` when the fit ends or fails.
    """

    def __init__(self, plan: RangeTestPlan, owner: str = OWNER) -> None:
        self.plan, self.owner = plan, owner
        self._snapshot = ExactSnapshot()
        self._curve: RangeCurve | None = None
        self._trainer: Trainer | None = None
        self._last_step = -1
        self.start_step: int | None = None
        self.last_curve: RangeCurve | None = None  # of the last probe that ended
        self._suspended: dict | None = None  # the probe's weights while validation runs

    @property
    def running(self) -> bool:
        return self._curve is not None

    def start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the snapshot and begin: the next optimizer step is the probe's first."""
        self._snapshot.take(pl_module, trainer.optimizers, trainer.global_step, schedulers=_schedulers(trainer),
                            scaler=_scaler(trainer))
        self._curve, self._trainer = RangeCurve(self.plan), trainer
        self._last_step = self.start_step = trainer.global_step
        context = run_context(trainer)
        context.probing = True
        for optimizer in trainer.optimizers:
            context.lr_control(optimizer).set_owner(self.owner, self._multiplier)

    def _multiplier(self, group: int) -> float:
        curve = self._curve
        return 1.0 if curve is None else self.plan.lr_at(min(len(curve.lrs), self.plan.num_steps - 1))

    def observe(self, trainer: Trainer, pl_module: LightningModule, outputs: Any) -> RangeTestResult | None:
        """At a batch end while running: record the loss of the step; when the probe is done
        (all steps, or a diverging loss, decided on the loss averaged over the ranks so that every
        rank stops alike), restore the state from before it and return what it found."""
        curve = self._curve
        if curve is None or trainer.global_step == self._last_step:
            return None  # not started, or inside a gradient accumulation
        self._last_step = trainer.global_step
        loss = batch_loss(trainer, outputs)
        value = torch.tensor(math.nan, device=pl_module.device) if loss is None else loss.detach().float().reshape(())
        if not curve.add(float(over_ranks(trainer, value, "mean"))):
            return None
        self.cancel()  # the state from before the probe comes back
        self.last_curve = curve
        return suggest(curve)

    def suspend(self, pl_module: LightningModule) -> None:
        """Validation starts inside the probe: the weights from before it go in, the probe's aside."""
        if self._curve is not None and self._suspended is None:
            self._suspended = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            model, _, _ = self._snapshot.saved()
            pl_module.load_state_dict(model)

    def resume(self, pl_module: LightningModule) -> None:
        """Validation ended: the probe's weights go back in and it goes on."""
        if self._suspended is not None:
            pl_module.load_state_dict(self._suspended)
            self._suspended = None

    def checkpoint_view(self, checkpoint: dict) -> dict:
        """The parts of a Lightning checkpoint taken during the probe, as they were before it:
        ``state_dict``, ``optimizer_states``, ``lr_schedulers`` (those that ``checkpoint`` holds)."""
        model, optimizers, schedulers = self._snapshot.saved()
        view = {"state_dict": dict(model)}
        if "optimizer_states" in checkpoint:
            view["optimizer_states"] = optimizers
        if "lr_schedulers" in checkpoint:
            view["lr_schedulers"] = schedulers
        return view

    def cancel(self) -> None:
        """End the probe (done, or the fit ends or fails during it): the state from before it comes
        back, no LR factor of ours remains, the suite's callbacks resume, the snapshot is freed."""
        trainer, running = self._trainer, self._curve is not None
        self._trainer, self._curve, self._suspended = None, None, None
        if trainer is None:
            return
        try:
            if running and self._snapshot.taken and trainer.lightning_module is not None:
                self._snapshot.restore(trainer.lightning_module, trainer.optimizers, schedulers=_schedulers(trainer),
                                       scaler=_scaler(trainer))
        finally:  # even when the restore fails (a device error during a fault): no factor or pause left
            self._snapshot.clear()
            context = run_context(trainer)
            context.probing = False
            for optimizer in trainer.optimizers:
                context.lr_control(optimizer).remove_owner(self.owner)


def _schedulers(trainer: Trainer) -> list:
    return [config.scheduler for config in trainer.lr_scheduler_configs]


def _scaler(trainer: Trainer):
    """The fp16 loss scaler of the run, if any (its scale halves on every Inf step of a probe)."""
    return getattr(trainer.precision_plugin, "scaler", None)
