"""Do no harm: a remedy is judged over the window after it, against the loss before it.

When a remedy changes training (the learning rate raised or cut), the caller keeps the state
from just before it and opens a check with the smoothed training loss of that moment. At the
next window of the loss, :meth:`InterventionCheck.judge` compares: a loss worse by more than
``margin`` (relative) and by more than its noise, or non-finite, means the remedy did harm. The
caller then undoes it (the state from before, the factor reverted), records an ``undo`` with
these numbers, and the same remedy is not tried again for the same reason (:meth:`allowed`).

The noise: the two losses compared are exponential moving averages of per-batch losses, each
with a standard deviation of ``sigma * sqrt((1 - beta) / (1 + beta))`` for batch losses of
standard deviation ``sigma`` around the trend; their difference, of ``sqrt(2)`` times that
(:func:`difference_noise`). The caller estimates ``sigma`` from the last window's batch losses
(``LossRegimeRule.batch_sigma``: from the median distance between successive batch losses over
the last 100 steps, which a slow trend barely enters and one spike does not move), and the
verdict takes the smaller of the estimate when the remedy acted and now
(a remedy that makes the loss noisier does not raise its own bar). A rise within
:data:`NOISE_MULTIPLE` standard deviations of the difference is not harm. Near a floor, where
batch losses barely differ, the relative margin decides.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

HARM_MARGIN = 0.1  # a smoothed loss 10% above its level before the remedy: worse than its noise near a floor
NOISE_MULTIPLE = 2.0  # standard deviations of the difference of two smoothed losses that a rise must exceed


def difference_noise(sigma: float, beta: float) -> float:
    """Standard deviation of the difference of two independent smoothed losses (EMAs with
    ``beta``, long past their start) of batch losses with standard deviation ``sigma`` around
    their trend. Same unit as the loss.

    Example:
        >>> round(difference_noise(0.125, beta=0.9), 4)  # EMA of about 10 steps
        0.0406
    """
    return math.sqrt(2.0) * sigma * math.sqrt((1.0 - beta) / (1.0 + beta))


@dataclass
class OpenCheck:
    reason: str  # the cause the remedy answered (the intervention's ``detail.reason``)
    step: int
    loss_before: float
    factor: float  # the LR factor it applied (1.0 when it changed no LR)
    min_steps: int = 0  # optimizer steps the remedy needs before a verdict (the judge may ask more)
    noise: float | None = None  # the difference's noise when the remedy acted (:func:`difference_noise`)


@dataclass(frozen=True)
class Verdict:
    check: OpenCheck
    loss_after: float
    harmed: bool
    noise: float = 0.0  # the difference's noise the verdict used

    def evidence(self) -> dict[str, Any]:
        return {"reason": self.check.reason, "intervention_step": self.check.step, "factor": self.check.factor,
                "loss_before": self.check.loss_before, "loss_after": self.loss_after,
                "rise_needed": max(self.check.loss_before * HARM_MARGIN, NOISE_MULTIPLE * self.noise),
                "waited_steps": self.check.min_steps}


class InterventionCheck:
    """The open check of the last remedy, and the reasons whose remedy did harm.

    Args:
        margin: relative rise of the smoothed loss that counts as harm.

    Example:
        >>> check = InterventionCheck()
        >>> check.open("learning_rate_too_low", step=150, loss_before=2.2, factor=40.0)
        >>> verdict = check.judge(loss_now=2.9)
        >>> verdict.harmed, check.allowed("learning_rate_too_low")
        (True, False)
        >>> check.open("plateau", step=400, loss_before=0.5, factor=0.1)
        >>> check.judge(loss_now=0.9, step=403, min_steps=10) is None  # 3 steps after it: too soon
        True
        >>> check.judge(loss_now=0.49, step=410, min_steps=10).harmed, check.judge(loss_now=0.1) is None
        (False, True)
        >>> check.open("learning_rate_too_high", step=500, loss_before=0.5, factor=0.1)
        >>> check.wait(40)  # a part of the remedy must learn first
        >>> check.judge(loss_now=0.6, step=510, min_steps=10) is None  # waits 40 steps
        True
        >>> check.judge(loss_now=5.0, step=510, min_steps=10, at_once=True).harmed  # unless it diverged
        True
        >>> check = InterventionCheck()
        >>> check.open("learning_rate_too_high", step=600, loss_before=0.21, factor=0.1)
        >>> check.judge(loss_now=0.233, step=610, noise=difference_noise(0.075, beta=0.9)).harmed  # within noise
        False
    """

    def __init__(self, margin: float = HARM_MARGIN) -> None:
        self.margin = margin
        self.pending: OpenCheck | None = None
        self.blocked: set[str] = set()

    def allowed(self, reason: str) -> bool:
        """Whether the remedy for ``reason`` may act (it never did harm in this fit)."""
        return reason not in self.blocked

    def block(self, reason: str) -> None:
        """The remedy for ``reason`` did harm, found later than its verdict: it acts no more."""
        self.blocked.add(reason)

    def open(self, reason: str, step: int, loss_before: float | None, factor: float = 1.0,
             noise: float | None = None) -> None:
        """A remedy for ``reason`` acted at ``step`` when the smoothed loss was ``loss_before``
        and the noise of a difference of two smoothed losses ``noise`` (no check is opened without
        a finite loss to compare with)."""
        if loss_before is not None and math.isfinite(loss_before):
            self.pending = OpenCheck(reason, int(step), float(loss_before), float(factor),
                                     noise=None if noise is None else float(noise))

    def wait(self, steps: int) -> None:
        """The open check's remedy needs ``steps`` optimizer steps before its verdict (a part of
        it that must learn first, such as revived units)."""
        if self.pending is not None:
            self.pending.min_steps = max(self.pending.min_steps, int(steps))

    def judge(self, loss_now: float | None, step: int | None = None, min_steps: int = 0,
              at_once: bool = False, noise: float = 0.0) -> Verdict | None:
        """At a window of the loss after the remedy: the verdict on it, once ``min_steps``
        optimizer steps (and the remedy's own :meth:`wait`) have passed since it acted (``None``
        before that, and when none is open; a window that closes right after a remedy holds too
        few of its steps to judge it). ``at_once``: the window diverged; the remedy's own wait is
        not waited out. ``noise``: the standard deviation of the difference of the two losses
        (:func:`difference_noise`) now; the smaller of it and the one when the remedy acted is
        used, and a rise within :data:`NOISE_MULTIPLE` of that is no harm. A remedy that did harm
        blocks its reason."""
        check = self.pending
        wait = min_steps if at_once else max(min_steps, check.min_steps) if check is not None else 0
        if check is None or (step is not None and step - check.step < wait):
            return None
        self.pending = None
        after = math.nan if loss_now is None else float(loss_now)
        noise = noise if check.noise is None else min(noise, check.noise)
        harmed = not math.isfinite(after) or (after > check.loss_before * (1.0 + self.margin)
                                               and after - check.loss_before > NOISE_MULTIPLE * noise)
        if harmed:
            self.blocked.add(check.reason)
        return Verdict(check, after, harmed, noise)

    def state_dict(self) -> dict[str, Any]:
        return {"pending": None if self.pending is None else asdict(self.pending), "blocked": sorted(self.blocked)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The state from before a remedy lives in host memory only: after a resume there is
        # nothing to undo to, so an open check is not restored.
        self.pending = None
        self.blocked = set(state.get("blocked", []))
