"""A run that ended before it converged: its loss still falling at a steady pace at the end.

A run that settles makes most of its progress early: its smoothed loss falls fast, then flattens.
A run whose learning rate is too small for its length is still falling at the end, at about the
pace it fell all along. At the end of fit, :class:`LateProgressRule` compares the progress made
in the second half of the run (in optimizer steps) with the progress of the whole run, both on
the smoothed training loss at the loss windows:

    late share = (loss at mid-run - loss at the end) / (loss at the start - loss at the end)

A run that converged can still show a large late share (a loss falling from 0.2 to 0.1 at the
end of a short run), but its weights move: its update/weight ratios stayed at 2.6e-3 or more
after the first steps on the sweep's tuning half. So the rule fires when the late share is
``late_share`` or more *and* the median update/weight ratio of the second half is below
:data:`~lightning_convergence.rules.causes.UPDATE_RATIO_LOW`: a ``slow_training`` warning whose
top cause is the learning rate being too low. Without ratios (no GradientNormMonitor in the
suite) nothing is judged. Runs that made no progress at all are ``no_learning`` (the loss
regime says so), and runs shorter than ``min_windows`` loss windows are not judged.

References:
    Leslie N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017: a loss
    that falls slowly and steadily is the low end of the learning-rate range.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from lightning_convergence.rules.causes import UPDATE_RATIO_LOW
from lightning_convergence.rules.findings import Cause, Finding

LATE_SHARE = 0.3
MIN_WINDOWS = 4
MIN_PROGRESS = 0.05  # a run whose loss fell less than this share of its start made no progress


class LateProgressRule:
    """Judges at the end of fit whether the smoothed training loss was still falling steadily.

    Args:
        late_share: share of the whole run's progress made in its second half from which the
            run is said to have ended before converging.
        min_windows: loss windows a run needs before it is judged.

    Example:
        >>> rule = LateProgressRule()
        >>> for step, loss in zip(range(0, 200, 20), [2.3 - 0.1 * i for i in range(10)]):
        ...     rule.observe(step, loss, update_ratio=4e-4)  # falling at the same pace all along
        >>> finding = rule.judge(start=2.3)
        >>> finding.kind, finding.causes[0].cause, round(finding.evidence["late_share"], 2)
        ('slow_training', 'learning_rate_too_low', 0.56)
        >>> settled = LateProgressRule()
        >>> for step, loss in zip(range(0, 200, 20), [2.3, 0.9, 0.5, 0.3, 0.25, 0.22, 0.2, 0.2, 0.19, 0.19]):
        ...     settled.observe(step, loss, update_ratio=4e-4)
        >>> settled.judge(start=2.3) is None
        True
    """

    def __init__(self, late_share: float = LATE_SHARE, min_windows: int = MIN_WINDOWS) -> None:
        self.late_share, self.min_windows = late_share, min_windows
        self._emas: list[tuple[int, float]] = []  # (step, smoothed loss) at each loss window
        self._ratios: list[tuple[int, float]] = []  # (step, median update/weight ratio) at those windows

    def observe(self, step: int, ema: float | None, update_ratio: float | None = None) -> None:
        """The smoothed training loss at the end of a loss window, and the latest median
        update/weight ratio over layers (when measured)."""
        if ema is not None and math.isfinite(ema):
            self._emas.append((int(step), float(ema)))
        if update_ratio is not None and math.isfinite(update_ratio):
            self._ratios.append((int(step), float(update_ratio)))

    def judge(self, start: float | None) -> Finding | None:
        """At the end of fit: a ``slow_training`` finding, or ``None``. ``start`` is the loss at
        the start of training."""
        if start is None or not math.isfinite(start) or len(self._emas) < self.min_windows:
            return None
        first_step, (end_step, end) = self._emas[0][0], self._emas[-1]
        if start - end < MIN_PROGRESS * abs(start):
            return None
        middle = first_step + (end_step - first_step) / 2
        mid_step, mid = min(self._emas, key=lambda e: abs(e[0] - middle))
        share = (mid - end) / (start - end)
        late_ratios = [r for step, r in self._ratios if step >= middle]
        if share < self.late_share or not late_ratios:
            return None
        ratio = statistics.median(late_ratios)
        if ratio >= UPDATE_RATIO_LOW:
            return None
        seen = (f"The smoothed training loss was still falling at a steady pace when training ended: {share:.0%} of "
                f"its progress came in the second half of the run (from {mid:.4g} at step {mid_step} to {end:.4g} "
                f"at step {end_step}; it started at {start:.4g}). A run that has converged makes most of its "
                f"progress early; this one stopped before it converged. Its weights moved by {ratio:.1e} of their norm "
                f"per step over the second half (runs that converge: {UPDATE_RATIO_LOW:.0e} or more).")
        evidence = {"late_share": share, "loss_start": start, "loss_mid": mid, "loss_end": end, "mid_step": mid_step,
                    "update_ratio_median": ratio}
        causes = (Cause("learning_rate_too_low", 0.7, {"late_share": round(share, 3), "update_ratio_median": ratio}),)
        return Finding("slow_training", "warning", seen, evidence=evidence, causes=causes,
                       remedies=("raise the learning rate (a range test finds the edge: Tuner.lr_find)",
                                 "or train for more steps"))

    def state_dict(self) -> dict[str, Any]:
        return {"emas": [list(e) for e in self._emas], "ratios": [list(r) for r in self._ratios]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._emas = [(int(s), float(v)) for s, v in state.get("emas", [])]
        self._ratios = [(int(s), float(v)) for s, v in state.get("ratios", [])]
