"""The preflight's step loops: the range test, one overfit attempt, the held-out steps.

Each runs optimizer steps through a :class:`~lightning_convergence.callbacks._preflight_steps.PreflightSteps`
(which undoes them all on exit) and returns what it measured as host numbers for the rules of
:mod:`lightning_convergence.rules.preflight_training`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lightning_convergence.callbacks._preflight_steps import PreflightSteps
from lightning_convergence.remedies.lr_range_test import RangeCurve, RangeTestPlan
from lightning_convergence.rules.preflight_training import HeldOutRun, OverfitRun

RANGE_START, RANGE_END = 1e-3, 1e3  # the range test's learning rates, as multiples of the configured one
STALL_STEPS, STALL_FALL = 30, 0.05  # an overfit that fell less than 5% in 30 steps stops there
HELDOUT_STEPS, HELDOUT_EVERY = 60, 10  # steps over the other batches; between two losses of the held-out one
HELDOUT_CARRIES = 0.1  # a held-out loss down by this share already shows that learning carries


def range_test(steps: PreflightSteps, batches: list[Any], first: float, num_steps: int,
               out_of_time: Callable[[], bool]) -> RangeCurve:
    """The range test over ``batches`` (cycled), the learning rate from :data:`RANGE_START` to
    :data:`RANGE_END` times the configured one; its first step (at ``RANGE_START``) was ``first``,
    taken by the caller (it also gives the loss and gradients at initialisation)."""
    plan = RangeTestPlan(RANGE_START, RANGE_END, num_steps=num_steps)
    curve = RangeCurve(plan)
    done = curve.add(first)
    for k in range(1, plan.num_steps):
        if done or out_of_time():
            break
        steps.set_multiplier(plan.lr_at(k))
        done = curve.add(steps.step(batches[k % len(batches)], k % len(batches)))
    return curve


def overfit(steps: PreflightSteps, batch: Any, multiplier: float, max_steps: int,
            out_of_time: Callable[[], bool]) -> OverfitRun:
    """Steps on one batch at ``multiplier`` times the configured rate: its loss at each. Stops when
    the batch is memorised, the loss is not finite, out of time, or when after :data:`STALL_STEPS`
    steps it has fallen by less than :data:`STALL_FALL`."""
    steps.set_multiplier(multiplier)
    losses: list[float] = []
    for k in range(max_steps):
        losses.append(steps.step(batch, 0))
        run = OverfitRun(multiplier, tuple(losses))
        stalled = k + 1 == STALL_STEPS and run.fall < STALL_FALL
        if not math.isfinite(losses[-1]) or run.memorised or stalled or out_of_time():
            break
    return OverfitRun(multiplier, tuple(losses))


def held_out(steps: PreflightSteps, batches: list[Any], multiplier: float) -> HeldOutRun:
    """From the snapshot, up to :data:`HELDOUT_STEPS` steps over every batch but the last, and the
    last one's loss before and every :data:`HELDOUT_EVERY` steps (evaluation mode, no update),
    until it fell by :data:`HELDOUT_CARRIES`."""
    steps.reset()
    steps.set_multiplier(multiplier)
    train, held = batches[:-1], batches[-1]
    losses = [steps.loss(held, len(batches) - 1)]
    for k in range(HELDOUT_STEPS):
        steps.step(train[k % len(train)], k % len(train))
        if (k + 1) % HELDOUT_EVERY == 0:
            losses.append(steps.loss(held, len(batches) - 1))
            fall = HeldOutRun(multiplier, tuple(losses)).fall
            if fall is not None and fall >= HELDOUT_CARRIES:
                break  # what it learns clearly carries: no need to go on
    return HeldOutRun(multiplier, tuple(losses))
