"""The learning-rate range test, run inside a training run: the schedule of the probe, its loss
curve, and the learning rate picked from it.

The test trains for a few dozen steps with a learning rate that grows exponentially, records the
loss of each step, stops when the loss diverges, and picks a learning rate from the curve (by
default a tenth of the one where the loss was lowest). This module holds the arithmetic only (no Lightning): the callback side
(``callbacks._range_test``) runs the steps from a snapshot and restores it afterwards.

The curve follows the conventions of Lightning's ``Tuner.lr_find`` so that the two agree on a
fresh model: an exponential moving average of the loss with bias correction
(``avg = beta * avg + (1 - beta) * loss``, ``smoothed = avg / (1 - beta ** k)`` at the k-th point),
and a stop when the smoothed loss exceeds ``early_stop_threshold`` times the best one.

Three rules pick the learning rate from the curve (:func:`suggest`):

- ``"minimum"`` (the default inside a run): a tenth of the learning rate at the lowest loss,
  the loss averaged over the few points around each (no lag). The fast.ai "minimum / 10"
  reading; Smith's advice to train a little below where the loss stops falling.
- ``"steepest"``: where the loss falls fastest per unit of log(lr), each slope a least-squares
  line through the few points around it.
- ``"lightning"``: Lightning's ``suggestion``, the steepest negative gradient of the smoothed loss
  with respect to the learning rate itself, after skipping the first points and the last one,
  the loss smoothed as Lightning 2.6 does (its bias correction counts the first point as the
  second: ``avg / (1 - beta ** (k + 2))``, which lowers the first points). Kept to check the probe
  against ``Tuner.lr_find`` on the same curve.

Why the default (measured: ``benchmarks/results/lr_range_test.md``): on the zoo's MLP at 1/100 of
its tuned SGD rate, a 40-step probe from the stalled run reached its lowest loss at 590-1200x the
rate and diverged just above; "minimum" picked 59-119x (the tuned rate: 100x), while "steepest"
(840-10,000x) and "lightning" (840-1700x) picked rates a short probe rewards and a long run cannot
sustain. With respect to the learning rate itself, the minibatch noise of the flat start is
divided by the smallest spacings, and the moving average lags about ``beta / (1 - beta)`` steps.

References:
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017 (the LR
    range test). fast.ai's ``lr_find``; Lightning's ``Tuner.lr_find`` (the smoothing, stop and
    suggestion conventions followed here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from lightning_convergence.validation import check_positive_int


@dataclass(frozen=True)
class RangeTestPlan:
    """Which learning rates the probe tries: ``num_steps`` values growing geometrically from
    ``start`` to ``end`` (both included), one per optimizer step.

    Args:
        start: the first learning rate (or multiplier of the current one); > 0.
        end: the last; > ``start``.
        num_steps: optimizer steps of the probe; at least 5.
        beta: the smoothing of the loss (0 <= beta < 1).
        early_stop_threshold: stop when the smoothed loss exceeds this many times the best one
            (> 1), or ``None`` to never stop early.

    Raises:
        ValueError: a value out of range, named.

    Example:
        >>> plan = RangeTestPlan(1.0, 1e4, num_steps=5)
        >>> [round(plan.lr_at(k), 6) for k in range(5)], round(plan.grid_step, 6)
        ([1.0, 10.0, 100.0, 1000.0, 10000.0], 10.0)
    """

    start: float
    end: float
    num_steps: int = 40
    beta: float = 0.9
    early_stop_threshold: float | None = 4.0

    def __post_init__(self) -> None:
        if not (isinstance(self.start, (int, float)) and math.isfinite(self.start) and self.start > 0):
            raise ValueError(f"`start` must be a finite learning rate > 0, got {self.start!r}.")
        if not (isinstance(self.end, (int, float)) and math.isfinite(self.end) and self.end > self.start):
            raise ValueError(f"`end` must be finite and above `start`={self.start!r}, got {self.end!r}.")
        check_positive_int("num_steps", self.num_steps)
        if self.num_steps < 5:
            raise ValueError(f"`num_steps` must be at least 5, got {self.num_steps!r}.")
        if not (isinstance(self.beta, (int, float)) and 0 <= self.beta < 1):
            raise ValueError(f"`beta` must be in [0, 1), got {self.beta!r}.")
        threshold = self.early_stop_threshold
        if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 1):
            raise ValueError(f"`early_stop_threshold` must be > 1 or None, got {threshold!r}.")

    @property
    def grid_step(self) -> float:
        """The ratio between two consecutive learning rates."""
        return (self.end / self.start) ** (1.0 / (self.num_steps - 1))

    def lr_at(self, k: int) -> float:
        """The learning rate of the k-th probe step (0-based)."""
        return self.start * self.grid_step ** k


@dataclass
class RangeCurve:
    """The probe's loss curve as it is recorded: raw and smoothed losses per learning rate.

    Example:
        >>> curve = RangeCurve(RangeTestPlan(1.0, 1e4, num_steps=5, beta=0.0))
        >>> [curve.add(loss) for loss in (4.0, 3.0, 1.0, 2.0, 9.0)]
        [False, False, False, False, True]
        >>> curve.diverged, len(curve.lrs)
        (True, 5)
    """

    plan: RangeTestPlan
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged: bool = False
    _avg: float = 0.0
    _best: float = math.inf

    @property
    def done(self) -> bool:
        return self.diverged or len(self.lrs) >= self.plan.num_steps

    def add(self, loss: float) -> bool:
        """Record the loss of the next probe step; returns whether the probe is done (all steps
        taken, or the loss diverged: non-finite or above the threshold times the best)."""
        k = len(self.lrs)
        self.lrs.append(self.plan.lr_at(k))
        self.losses.append(float(loss))
        if not math.isfinite(loss):
            self.smoothed.append(math.nan)
            self.diverged = True
            return True
        beta = self.plan.beta
        self._avg = beta * self._avg + (1 - beta) * loss
        smoothed = self._avg / (1 - beta ** (k + 1))
        self.smoothed.append(smoothed)
        threshold = self.plan.early_stop_threshold
        if threshold is not None and k > 1 and smoothed > threshold * self._best:
            self.diverged = True
        self._best = min(self._best, smoothed)
        return self.done


@dataclass(frozen=True)
class RangeTestResult:
    """What the probe measured and picked.

    Attributes:
        lrs, losses, smoothed: the curve, one point per probe step (learning rates in the
            plan's unit: absolute, or multipliers of the LR at the start).
        pick: the picked learning rate, or ``None`` when the curve does not allow a pick (too
            few finite points, or the loss never fell).
        pick_index: the index in ``lrs`` the pick was read at (for ``"minimum"``, the lowest
            loss; the pick is a tenth of its learning rate).
        diverged: whether the probe stopped on a diverging loss.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    pick: float | None
    pick_index: int | None
    diverged: bool

    def detail(self) -> dict:
        """The curve (the raw loss of each probe step) and the pick, for an intervention's
        detail (JSON-ready; every rule can be applied to it again)."""
        clean = [None if not math.isfinite(v) else round(v, 6) for v in self.losses]
        return {"range_lrs": [float(f"{lr:.6g}") for lr in self.lrs], "range_losses": clean,
                "range_pick": self.pick, "range_diverged": self.diverged}


def suggest(curve: RangeCurve, rule: Literal["minimum", "steepest", "lightning"] = "minimum",
            skip_begin: int | None = None, skip_end: int = 1, half_width: int = 2) -> RangeTestResult:
    """The learning rate the curve suggests (see the module docstring for the rules).

    Args:
        curve: the recorded probe.
        rule: ``"minimum"``: a tenth of the learning rate where the raw loss averaged over the
            ``2 * half_width + 1`` points around each point (fewer at the ends) is lowest;
            ``"steepest"``: the most negative least-squares slope of the raw loss against
            log(lr) over those points; ``"lightning"``: Lightning's rule, the most negative
            gradient of the smoothed loss with respect to the learning rate.
        skip_begin: points skipped at the start (default: none, or with ``"lightning"`` a
            tenth of the planned steps, as Lightning's 10 of 100).
        skip_end: points dropped at the end (the one that stopped the probe).

    Returns:
        The curve and the pick; no pick when fewer than 2 finite points remain, when the loss
        never falls there, or (``"minimum"``) when its lowest point is not clearly below the
        start: by 3% of it and by twice the minibatch noise of the first 5 losses (a flat, noisy
        curve picks nothing).

    Example:
        >>> curve = RangeCurve(RangeTestPlan(1e-4, 1.0, num_steps=5, beta=0.0))
        >>> for loss in (2.3, 2.25, 1.4, 1.35, 30.0):
        ...     _ = curve.add(loss)
        >>> round(suggest(curve, "steepest", half_width=1).pick, 6), round(suggest(curve, half_width=0).pick, 6)
        (0.001, 0.01)
        >>> suggest(curve, "lightning", skip_begin=0).pick_index
        2
    """
    lightning = rule == "lightning"
    skip = (max(1, curve.plan.num_steps // 10) if lightning else 0) if skip_begin is None else skip_begin
    values = _lightning_smoothing(curve.losses, curve.plan.beta) if lightning else curve.losses
    points = [(i, lr, v) for i, (lr, v) in enumerate(zip(curve.lrs, values))][skip:len(curve.lrs) - skip_end]
    points = [(i, lr, v) for i, lr, v in points if math.isfinite(v)]
    pick = index = None
    if len(points) >= 2:
        y = [v for _, _, v in points]
        if rule == "minimum":
            means = _local_means(y, half_width)
            best = min(range(len(means)), key=means.__getitem__)
            if means[0] - means[best] > _noise_floor(y[:5], means[0]):  # it fell: a tenth of where it was lowest
                index, pick = points[best][0], points[best][1] / 10.0
        else:
            slopes = (_gradient([lr for _, lr, _ in points], y) if lightning
                      else _local_slopes([math.log(lr) for _, lr, _ in points], y, half_width))
            best = min(range(len(slopes)), key=slopes.__getitem__)
            if slopes[best] < 0:
                index, pick = points[best][0], points[best][1]
    return RangeTestResult(list(curve.lrs), list(curve.losses), list(curve.smoothed), pick, index, curve.diverged)


def _noise_floor(first: list[float], level: float) -> float:
    """How far the loss must fall to count: 3% of its level, and twice the minibatch noise of its
    first points (from their successive differences, which a trend barely lifts)."""
    diffs = [b - a for a, b in zip(first, first[1:])]
    noise = (sum(d * d for d in diffs) / (2 * len(diffs))) ** 0.5 if diffs else 0.0
    return max(0.03 * abs(level), 2.0 * noise)


def _lightning_smoothing(losses: list[float], beta: float) -> list[float]:
    """The loss as Lightning's ``lr_find`` smooths it (see the module docstring)."""
    avg, out = 0.0, []
    for k, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (k + 2)))
    return out


def _local_means(y: list[float], half_width: int) -> list[float]:
    """The mean of ``y`` over the points within ``half_width`` of each."""
    return [sum(y[max(0, i - half_width):i + half_width + 1]) / len(y[max(0, i - half_width):i + half_width + 1])
            for i in range(len(y))]


def _local_slopes(x: list[float], y: list[float], half_width: int) -> list[float]:
    """The least-squares slope of ``y`` on ``x`` over the points within ``half_width`` of each."""
    slopes = []
    for i in range(len(x)):
        xs, ys = x[max(0, i - half_width):i + half_width + 1], y[max(0, i - half_width):i + half_width + 1]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((a - mx) ** 2 for a in xs)
        slopes.append(sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / var if var > 0 else 0.0)
    return slopes


def _gradient(x: list[float], y: list[float]) -> list[float]:
    """dy/dx at every point with second-order central differences inside and first-order ones at
    the ends, for uneven spacing (as ``numpy.gradient`` / ``torch.gradient`` with coordinates)."""
    n = len(x)
    if n == 2:
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return [slope, slope]
    out = [(y[1] - y[0]) / (x[1] - x[0])]
    for i in range(1, n - 1):
        h0, h1 = x[i] - x[i - 1], x[i + 1] - x[i]
        out.append((h0 ** 2 * y[i + 1] + (h1 ** 2 - h0 ** 2) * y[i] - h1 ** 2 * y[i - 1]) / (h0 * h1 * (h0 + h1)))
    out.append((y[-1] - y[-2]) / (x[-1] - x[-2]))
    return out
