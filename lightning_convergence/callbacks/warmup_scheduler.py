"""WarmupScheduler: learning-rate warmup on top of whatever scheduler the user already has."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.remedies.warmup import SHAPES, Shape, untuned_period, warmup_factor
from lightning_convergence import tags
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.validation import check_positive_int

WarmupSteps = int | float | Literal["untuned"] | Sequence[int]


class WarmupScheduler(ConvergenceCallback):
    """Warms the learning rate up over the first optimizer steps, as a factor on the user's LR.

    The factor goes through the suite's shared LR control, which multiplies each param group's
    LR around ``optimizer.step()`` and restores it right after: the effective LR is the user's
    scheduler LR times the warmup factor (times any other remedy's factor), and the scheduler's
    own trajectory, LearningRateMonitor and checkpoints all keep seeing the scheduler's LR. It
    works with no scheduler, LambdaLR, StepLR, CosineAnnealingLR, OneCycleLR and
    ReduceLROnPlateau alike.

    Steps are counted per optimizer, as optimizer steps actually taken (once per step under
    ``accumulate_grad_batches``; a step the fp16 scaler skips does not count), and checkpointed,
    so a resume mid-warmup continues where it stopped. Other callbacks can call
    :meth:`rewarmup` (after a rollback or a large LR change) to warm up again over a length of
    their own. Logged every logging step: ``convergence/lr_factor`` and the effective LR of each
    param group, ``convergence/lr/group<i>`` (``convergence/lr/opt<k>/group<i>`` for optimizers
    after the first).

    Args:
        warmup_steps: an int (optimizer steps; 0 means no warmup), a float in (0, 1) (that
            fraction of the run's total optimizer steps, ``trainer.estimated_stepping_batches``),
            ``"untuned"`` (``2 / (1 - beta2)`` steps for linear and cosine, ``1 / (1 - beta2)`` as
            the time constant for exponential, read from an Adam-family optimizer; Ma & Yarats
            2021), or a list of ints, one per param group.
        shape: ``"linear"`` (``(t + 1) / N``), ``"exponential"`` (``1 - exp(-(t + 1) / N)``)
            or ``"cosine"`` (half a cosine from 0 to 1).
        log_every_n_steps: logging cadence; ``None`` uses the Trainer's.

    Raises:
        ValueError, TypeError: an argument out of range or of the wrong type.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[WarmupScheduler(warmup_steps=500)], logger=False)

    References:
        Ma, Yarats, "On the adequacy of untuned warmup for adaptive optimization", AAAI 2021.
    """

    def __init__(self, warmup_steps: WarmupSteps = "untuned", shape: Shape = "linear",
                 log_every_n_steps: int | None = None, report_window_steps: int = 500) -> None:
        super().__init__(auto_remediate=True, report_window_steps=report_window_steps,
                         log_every_n_steps=log_every_n_steps)
        _check_warmup_steps(warmup_steps)
        if shape not in SHAPES:
            raise ValueError(f"`shape` must be one of {SHAPES}, got {shape!r}.")
        self.warmup_steps = warmup_steps
        self.shape = shape
        self._steps: dict[int, int] = {}  # optimizer index -> optimizer steps taken
        self._periods: dict[int, list[int]] = {}  # optimizer index -> warmup length per group
        self._rewarmup: dict[int, tuple[int, int]] = {}  # optimizer index -> (start step, length)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(warmup_steps=str(self.warmup_steps), shape=self.shape)

    # ----------------------------------------------------------------- the factor

    def _resolve_periods(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> list[int]:
        groups = len(optimizer.param_groups)
        steps = self.warmup_steps
        if steps == "untuned":
            return [untuned_period(optimizer, self.shape, g) for g in range(groups)]
        if isinstance(steps, float):
            total = trainer.estimated_stepping_batches
            return [math.ceil(steps * total)] * groups if math.isfinite(total) else [0] * groups
        if isinstance(steps, int):
            return [steps] * groups
        periods = [int(s) for s in steps]
        if len(periods) != groups:
            raise ValueError(f"`warmup_steps` has {len(periods)} periods but the optimizer has {groups} param groups.")
        return periods

    def factor(self, index: int, group: int) -> float:
        """The current factor of optimizer ``index``'s param group ``group``."""
        step = self._steps.get(index, 0)
        value = warmup_factor(self.shape, step, self._periods[index][group])
        if index in self._rewarmup:
            start, length = self._rewarmup[index]
            value *= warmup_factor(self.shape, step - start, length)
        return value

    def rewarmup(self, trainer: Trainer, optimizer_index: int = 0, steps: int = 100, source: str = "") -> None:
        """Warm up again from the next optimizer step over ``steps`` steps (on top of the user's LR).

        Args:
            trainer: the running Trainer.
            optimizer_index: which optimizer.
            steps: length of the new warmup.
            source: who asked (recorded in the intervention).
        """
        check_positive_int("steps", steps)
        start = self._steps.get(optimizer_index, 0)
        self._rewarmup[optimizer_index] = (start, steps)
        self.record_intervention(trainer, "warmup", trainer.global_step,
                                 {"event": "rewarmup", "steps": steps, "shape": self.shape, "requested_by": source,
                                  "optimizer": optimizer_index})

    def _after_step(self, trainer: Trainer, index: int) -> None:
        if self.probing(trainer):
            return  # a range test's steps are undone: the warmup does not advance
        step = self._steps.get(index, 0) + 1
        self._steps[index] = step
        periods = self._periods[index]
        if max(periods) > 0 and step == max(periods):
            self.record_intervention(trainer, "warmup", trainer.global_step,
                                     {"event": "end", "optimizer": index, "steps": max(periods)})
        if index in self._rewarmup:
            start, length = self._rewarmup[index]
            if step - start >= length:
                del self._rewarmup[index]
                self.record_intervention(trainer, "warmup", trainer.global_step,
                                         {"event": "rewarmup_end", "optimizer": index, "steps": length})

    # ----------------------------------------------------------------- hooks

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.fast_dev_run:
            return
        # Optimizer state (and the user's LRs) are restored before this hook: attach here.
        for index, optimizer in enumerate(trainer.optimizers):
            self._periods[index] = self._resolve_periods(trainer, optimizer)
            if self._steps.get(index, 0) == 0 and max(self._periods[index]) > 0:
                self.record_intervention(trainer, "warmup", trainer.global_step, {
                    "event": "start", "optimizer": index, "steps": self._periods[index][0]
                    if len(set(self._periods[index])) == 1 else self._periods[index], "shape": self.shape})
        self.own_lr(trainer, self.factor, after_step=lambda i: self._after_step(trainer, i))

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._clock.window_ends(trainer.global_step, self.logging_cadence(trainer)):
            return
        context = self.context(trainer)
        metrics: dict[str, float] = {}
        for index, optimizer in enumerate(trainer.optimizers):
            control = context.lr_control(optimizer)
            for group, lr in enumerate(control.last_effective_lrs):
                metrics[tags.lr(group, optimizer=index)] = lr
            if index == 0 and control.last_factors:
                metrics[tags.LR_FACTOR] = control.last_factors[0]
        log_scalars(trainer, metrics, trainer.global_step - 1)

    @override
    def _remove_hooks(self) -> None:
        self.release_lr()

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["steps"] = {str(k): v for k, v in self._steps.items()}
        state["rewarmup"] = {str(k): list(v) for k, v in self._rewarmup.items()}
        return state

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._steps = {int(k): int(v) for k, v in state_dict.get("steps", {}).items()}
        self._rewarmup = {int(k): (int(v[0]), int(v[1])) for k, v in state_dict.get("rewarmup", {}).items()}


def _check_warmup_steps(value: object) -> None:
    if isinstance(value, bool):
        raise TypeError(f"`warmup_steps` must be an int, a float in (0, 1), 'untuned' or a list of ints, got {value!r}.")
    if isinstance(value, str):
        if value != "untuned":
            raise ValueError(f"`warmup_steps` as a string must be 'untuned', got {value!r}.")
    elif isinstance(value, int):
        if value < 0:
            raise ValueError(f"`warmup_steps` must be >= 0, got {value!r}.")
    elif isinstance(value, float):
        if not math.isfinite(value) or not 0 < value < 1:
            raise ValueError(f"`warmup_steps` as a fraction must be in (0, 1), got {value!r}.")
    elif isinstance(value, (list, tuple)):
        if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            raise ValueError(f"`warmup_steps` as a list must hold ints >= 0, got {value!r}.")
    else:
        raise TypeError(f"`warmup_steps` must be an int, a float in (0, 1), 'untuned' or a list of ints, got {value!r}.")
