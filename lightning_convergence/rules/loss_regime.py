"""Which regime a training loss is in: divergence, oscillation, no learning, or progress.

Fed the per-step training losses of one window at a time (host floats, in step order), the rule
keeps a few floats of state and returns findings. The loss is smoothed per step with an EMA
(``beta`` 0.9 by default: about the last 10 steps), and every threshold is relative:

- ``divergence``: most of a window's losses are NaN/Inf (and at least ``nonfinite_min_steps``);
  or the smoothed loss, and the window's
  median with it, has climbed back above its best by ``divergence_rise`` of the progress made so
  far (start - best), or above the starting loss by ``divergence_above_start`` of it. The start
  is the median of the first ``initial_steps`` losses, or the first loss alone (taken before
  any update) when that median is over 1.5x it (a too-high LR can blow up the loss at once); the best is the lowest value of a slower
  average (about 50 steps), so that minibatch noise does not fake progress. A single NaN batch
  is not divergence (the gradient monitor skips it).
- ``oscillation``: the loss averaged over chunks of ``chunk`` steps swings around its trend
  (a quadratic fit over the last two windows) much more than the minibatch noise explains
  (``oscillation_noise_ratio`` x the standard error of a chunk mean) and by a sizeable share of
  its level (``oscillation_level``), while the trend itself is smaller than the swings.
- ``no_learning``: after ``no_learning_steps`` steps the smoothed loss has never been
  ``no_learning_progress`` below where it started (after a third of those steps when the caller
  passes an update ratio below ``UPDATE_RATIO_LOW``, the signature of a learning rate too low,
  ``rules.causes``: PlateauAdvisor does when it acts, so that its remedy comes early; an
  observing run waits the full count, which on the calibration sweep put no warning on runs that
  converged later); with ``num_classes`` known, "near chance"
  when it sits within ``chance_tolerance`` of log(K). If it had jumped well above the start
  first (the smoothed loss by half of ``divergence_above_start``, or a single batch's loss by that
  much and by 6 typical minibatch deviations) it is a collapse after an early divergence, and
  reported as ``divergence``.

Plateaus are judged by :class:`~lightning_convergence.rules.plateau_schedule.PlateauSchedule`
(torch's ``ReduceLROnPlateau`` decisions) and overfitting by
:class:`~lightning_convergence.rules.overfit.OverfitRule`.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from lightning_convergence.rules.causes import UPDATE_RATIO_LOW
from lightning_convergence.rules.findings import Finding
from lightning_convergence.validation import check_fields, check_open_fraction, check_positive_float, check_positive_int

_SLOW_BETA = 0.98
_MEDIAN_ABS_NORMAL = 0.6745  # median |x - mean| of a normal variable, in standard deviations
_SPREAD_STEPS = 100  # batch losses the spread is read over (the median of 100: about 11% error)
_MIN_SPREAD_VALUES = 10  # before that many, no spread
TAIL_MIN_STEPS = 10  # a last partial window (or a run shorter than one window) is judged from this many losses
_NOISE_MULTIPLE = 6.0  # a single loss this many typical deviations above the start is a jump


@dataclass(frozen=True)
class RegimeThresholds:
    """Thresholds of :class:`LossRegimeRule`; see the module docstring for what each means."""

    beta: float = 0.9
    initial_steps: int = 5
    nonfinite_fraction: float = 0.5
    nonfinite_min_steps: int = 5
    divergence_rise: float = 0.5
    divergence_above_start: float = 0.5
    chunk: int = 5
    oscillation_noise_ratio: float = 4.0
    oscillation_level: float = 0.2
    no_learning_steps: int = 150
    no_learning_progress: float = 0.05
    chance_tolerance: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self, check_open_fraction, "beta", "nonfinite_fraction", "no_learning_progress", "chance_tolerance")
        check_fields(self, check_positive_float, "divergence_rise", "divergence_above_start", "oscillation_noise_ratio",
                     "oscillation_level")
        check_fields(self, check_positive_int, "initial_steps", "chunk", "no_learning_steps", "nonfinite_min_steps")


class LossRegimeRule:
    """Classifies the training loss window by window.

    Args:
        thresholds: see :class:`RegimeThresholds`.
        num_classes: the number of classes of a classification loss, when known (for chance level).

    Raises:
        TypeError: ``thresholds`` is not a :class:`RegimeThresholds`, or ``num_classes`` not an int.
        ValueError: ``num_classes`` is below 2.

    Example:
        >>> rule = LossRegimeRule(RegimeThresholds(initial_steps=2))
        >>> rule.evaluate(list(range(20)), [2.0 - 0.05 * i for i in range(20)])
        []
        >>> [f.kind for f in rule.evaluate(list(range(20, 40)), [5.0] * 20)]
        ['divergence']
    """

    def __init__(self, thresholds: RegimeThresholds | None = None, num_classes: int | None = None) -> None:
        if thresholds is not None and not isinstance(thresholds, RegimeThresholds):
            raise TypeError(f"`thresholds` must be a RegimeThresholds, got {thresholds!r}.")
        check_positive_int("num_classes", num_classes, allow_none=True)
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes!r}.")
        self.thresholds = thresholds or RegimeThresholds()
        self.num_classes = num_classes
        self.ema: float | None = None
        self.slow: float | None = None
        self.initial: float | None = None
        self.best = math.inf
        self.best_step = -1
        self.peak = -math.inf  # the highest smoothed loss seen
        self.peak_step = -1
        self.raw_peak = -math.inf  # the highest single loss seen
        self.raw_peak_step = -1
        self.noise = 0.0
        # The standard deviation of one batch's loss around its trend over the last
        # ``_SPREAD_STEPS`` steps, from the median distance between successive batch losses (a
        # slow trend barely enters it, and one spike moves two of the distances, not the median);
        # None before ``_MIN_SPREAD_VALUES`` of them.
        self.batch_sigma: float | None = None
        self._distances: deque[float] = deque(maxlen=_SPREAD_STEPS)
        self._last_value: float | None = None
        self.steps_seen = 0
        self._first: list[float] = []
        self._previous_chunks: list[tuple[float, float]] = []  # (mean, variance) of the last window
        self._marked: tuple[float | None, float | None] = (None, None)  # (ema, slow) at the last mark
        self._window_finite = True  # no NaN/Inf in the last window evaluated

    @property
    def progress_made(self) -> bool:
        """Whether the smoothed loss ever went clearly below where it started."""
        return self.initial is not None and self.best < _lowered(self.initial, self.thresholds.no_learning_progress)

    @property
    def chance_level(self) -> float | None:
        """The loss of a classifier of ``num_classes`` K that learned nothing: log(K), its
        cross-entropy when it predicts the class frequencies of balanced data; ``None`` when K is
        unknown."""
        return math.log(self.num_classes) if self.num_classes else None

    def evaluate(self, steps: list[int], losses: list[float], update_ratio: float | None = None) -> list[Finding]:
        """Judge one window of per-step losses; returns the findings (possibly none).
        ``update_ratio``: the latest median relative update of the weights per step, if measured."""
        if not losses:
            return []
        t = self.thresholds
        findings: list[Finding] = []
        nonfinite = [s for s, v in zip(steps, losses) if not math.isfinite(v)]
        self._window_finite = not nonfinite
        if len(nonfinite) >= max(t.nonfinite_fraction * len(losses), t.nonfinite_min_steps):
            findings.append(self._nonfinite_divergence(nonfinite, len(losses)))
        onset = self._smooth(steps, losses)
        finite = [v for v in losses if math.isfinite(v)]
        # The median of the window must be over the line too: one heavy minibatch lifts the EMA.
        if onset is not None and not findings and finite and statistics.median(finite) > self._divergence_line():
            findings.append(self._rising_divergence(onset))
        oscillation = self._oscillation(finite, steps)
        if oscillation is not None and not findings:
            findings.append(oscillation)
        no_learning = self._no_learning(update_ratio)
        if no_learning is not None and not findings:
            findings.append(no_learning)
        return findings

    # ----------------------------------------------------------------- smoothing and divergence

    def _smooth(self, steps: list[int], losses: list[float]) -> int | None:
        """Advance the EMA over the window; the first step where it crossed the divergence line."""
        t = self.thresholds
        onset = None
        for step, value in zip(steps, losses):
            if not math.isfinite(value):
                continue
            self.steps_seen += 1
            if self._last_value is not None:
                self._distances.append(abs(value - self._last_value))
            self._last_value = value
            if self.initial is None:
                self._first.append(value)
                if len(self._first) >= t.initial_steps:
                    # The median of the first few is steadier than one batch; but when it is far
                    # above the first loss (taken before any update), the loss blew up at once.
                    median = statistics.median(self._first)
                    self.initial = median if median <= 1.5 * self._first[0] else self._first[0]
            if self.ema is not None:  # the typical distance of one batch's loss from the smoothed loss
                self.noise = _SLOW_BETA * self.noise + (1 - _SLOW_BETA) * abs(value - self.ema)
            self.ema = value if self.ema is None else t.beta * self.ema + (1 - t.beta) * value
            if self.ema > self.peak:
                self.peak, self.peak_step = self.ema, step
            if value > self.raw_peak:
                self.raw_peak, self.raw_peak_step = value, step
            # The best is taken on a slower average (about 50 steps): the minimum of a noisy
            # fast average sits far below the typical loss and would fake progress.
            if self.initial is None:
                continue
            # (started at the start value, so that its first values are not one batch's)
            self.slow = self.initial if self.slow is None else _SLOW_BETA * self.slow + (1 - _SLOW_BETA) * value
            if self.slow < self.best:
                self.best, self.best_step = self.slow, step
            if onset is None and self._diverged(self.ema):
                onset = step
        if len(self._distances) >= _MIN_SPREAD_VALUES:
            # x_t - x_(t-1) has a standard deviation of sqrt(2) sigma.
            self.batch_sigma = statistics.median(self._distances) / (_MEDIAN_ABS_NORMAL * math.sqrt(2.0))
        return onset if onset is not None and self.ema is not None and self._diverged(self.ema) else None

    def _divergence_line(self) -> float:
        """Above this the smoothed loss has diverged: well above the start, or far back up
        from its best relative to the progress made."""
        t = self.thresholds
        start, best = self.initial, self.best
        line = start + t.divergence_above_start * abs(start)
        if self.progress_made:
            line = min(line, best + t.divergence_rise * (start - best))
        return line

    @property
    def steady(self) -> bool:
        """Whether the last window was finite and its smoothed loss well clear of the divergence
        line (halfway or less from its best to the line): a state worth keeping as a snapshot to
        roll back to."""
        if not self._window_finite or self.initial is None or self.ema is None or not math.isfinite(self.ema):
            return False
        best = min(self.best, self.initial)
        return self.ema <= best + 0.5 * (self._divergence_line() - best)

    def _diverged(self, ema: float) -> bool:
        return ema > self._divergence_line()

    def _nonfinite_divergence(self, nonfinite: list[int], count: int) -> Finding:
        seen = (f"The training loss was NaN/Inf on {len(nonfinite)} of the last {count} steps (from step "
                f"{nonfinite[0]}): training has diverged.")
        return Finding("divergence", "critical", seen,
                       evidence={"nonfinite_steps": len(nonfinite), "window_steps": count}, step=nonfinite[0])

    def _rising_divergence(self, onset: int) -> Finding:
        if self.best >= self.initial:  # it never improved: the best is where it started
            seen = (f"The smoothed training loss climbed from where it started, {self.initial:.4g}, to "
                    f"{self.ema:.4g}, from step {onset} on, without ever improving.")
        else:
            seen = (f"The smoothed training loss climbed from its best {self.best:.4g} (step {self.best_step}) to "
                    f"{self.ema:.4g}; it started at {self.initial:.4g}. The climb began at step {onset}.")
        evidence = {"loss_ema": self.ema, "best": self.best, "best_step": self.best_step, "initial": self.initial}
        return Finding("divergence", "critical", seen, evidence=evidence, step=onset)

    # ----------------------------------------------------------------- oscillation

    def _oscillation(self, finite: list[float], steps: list[int]) -> Finding | None:
        t = self.thresholds
        chunks = [finite[i:i + t.chunk] for i in range(0, len(finite) - t.chunk + 1, t.chunk)]
        stats = [_mean_var(c) for c in chunks]
        series, self._previous_chunks = self._previous_chunks + stats, stats
        if len(series) < 6 or self.initial is None:
            return None
        means = [m for m, _ in series]
        residuals = _quadratic_residuals(means)
        amplitude = math.sqrt(_mean_var(residuals)[1])
        noise = math.sqrt(_mean_var([v for _, v in series])[0] / t.chunk)
        level = abs(_mean_var(means)[0])
        trend = abs(means[-1] - residuals[-1] - (means[0] - residuals[0]))
        if not (amplitude > t.oscillation_noise_ratio * noise and amplitude > t.oscillation_level * level
                and trend < 2 * amplitude):
            return None
        seen = (f"The training loss swings up and down: averaged over {t.chunk}-step chunks it varies by "
                f"{amplitude:.3g} around its trend (level {level:.3g}), {amplitude / max(noise, 1e-12):.1f}x what "
                f"minibatch noise explains, over steps {steps[0]}-{steps[-1]} and the window before.")
        evidence = {"amplitude": amplitude, "noise": noise, "level": level, "trend": trend}
        return Finding("oscillation", "warning", seen, evidence=evidence)

    # ----------------------------------------------------------------- no learning

    def _no_learning(self, update_ratio: float | None = None) -> Finding | None:
        t = self.thresholds
        barely_moving = update_ratio is not None and 0 < update_ratio < UPDATE_RATIO_LOW
        needed = t.no_learning_steps // 3 if barely_moving else t.no_learning_steps
        if self.initial is None or self.steps_seen < needed or self.progress_made:
            return None
        jump = self.initial + 0.5 * t.divergence_above_start * abs(self.initial)
        # One batch's loss counts only when it stands far out of the minibatch noise too.
        raw_jump = max(jump, self.initial + _NOISE_MULTIPLE * self.noise)
        if self.peak > jump or self.raw_peak > raw_jump:
            # It blew up first (the smoothed loss, or one batch's loss, well above the start) and
            # then settled where it started: a collapse (dead units, weights pushed into a useless
            # region), not a run that never learned. A too-low LR does not make the loss jump.
            peak, at = (self.peak, self.peak_step) if self.peak > jump else (self.raw_peak, self.raw_peak_step)
            seen = (f"The training loss jumped from {self.initial:.4g} to {peak:.4g} at step {at}, then settled "
                    f"back around {self.ema:.4g} without ever improving: training diverged early and the network "
                    "collapsed (often into dead units).")
            evidence = {"initial": self.initial, "peak": peak, "peak_step": at, "loss_ema": self.ema}
            return Finding("divergence", "critical", seen, evidence=evidence, step=at)
        seen = (f"The smoothed training loss has not moved meaningfully in {self.steps_seen} steps: it started at "
                f"{self.initial:.4g} and its best is {self.best:.4g}.")
        evidence = {"initial": self.initial, "best": self.best, "steps": self.steps_seen}
        if barely_moving:
            evidence["update_ratio_median"] = update_ratio
        if self.num_classes:
            chance = math.log(self.num_classes)
            evidence["chance_level"] = chance
            if abs(self.best - chance) <= t.chance_tolerance * chance:
                seen += f" That is chance level for {self.num_classes} classes (log {self.num_classes} = {chance:.3g})."
        return Finding("no_learning", "warning", seen, evidence=evidence)

    def smoothed_through(self, losses: list[float]) -> float | None:
        """The smoothed loss as it stands after ``losses`` (steps not yet judged), without judging
        them or changing any state: to compare with a metric measured between two windows.

        Example:
            >>> rule = LossRegimeRule(RegimeThresholds(beta=0.5))
            >>> _ = rule.evaluate([0], [4.0])
            >>> rule.smoothed_through([2.0, float("nan"), 1.0]), rule.ema
            (2.0, 4.0)
        """
        ema, beta = self.ema, self.thresholds.beta
        for value in losses:
            if math.isfinite(value):
                ema = value if ema is None else beta * ema + (1 - beta) * value
        return ema

    def mark(self) -> None:
        """Remember the smoothed loss now (a snapshot is taken): :meth:`restart_from_mark`
        returns to it after a rollback to that snapshot. Not checkpointed, like the snapshot."""
        self._marked = (self.ema, self.slow)

    def restart_from_mark(self) -> None:
        """After a rollback to the last :meth:`mark`: see :meth:`restart_from`."""
        self.restart_from(*self._marked)

    def restart_from(self, ema: float | None, slow: float | None = None) -> None:
        """After a rollback: the smoothed loss is the snapshot's again, the chunks start over."""
        self.ema, self.slow = ema, slow if slow is not None else ema
        self._previous_chunks = []
        self.peak, self.peak_step = -math.inf, -1
        self.raw_peak, self.raw_peak_step = -math.inf, -1
        self.steps_seen = 0  # no_learning is judged afresh from here
        self._last_value = None  # no distance across the rollback

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict:
        return {"ema": self.ema, "slow": self.slow, "initial": self.initial, "best": self.best, "best_step": self.best_step,
                "peak": self.peak, "peak_step": self.peak_step, "raw_peak": self.raw_peak,
                "raw_peak_step": self.raw_peak_step, "noise": self.noise, "batch_sigma": self.batch_sigma,
                "distances": list(self._distances), "last_value": self._last_value,
                "steps_seen": self.steps_seen, "first": list(self._first),
                "previous_chunks": [list(c) for c in self._previous_chunks]}

    def load_state_dict(self, state: dict) -> None:
        self.ema, self.slow, self.initial = state["ema"], state.get("slow"), state["initial"]
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.steps_seen = int(state["steps_seen"])
        self.peak, self.peak_step = float(state.get("peak", -math.inf)), int(state.get("peak_step", -1))
        self.raw_peak = float(state.get("raw_peak", -math.inf))
        self.raw_peak_step = int(state.get("raw_peak_step", -1))
        self.noise = float(state.get("noise", 0.0))
        sigma = state.get("batch_sigma")
        self.batch_sigma = None if sigma is None else float(sigma)
        self._distances = deque((float(d) for d in state.get("distances", [])), maxlen=_SPREAD_STEPS)
        last = state.get("last_value")
        self._last_value = None if last is None else float(last)
        self._first = [float(v) for v in state["first"]]
        self._previous_chunks = [(float(m), float(v)) for m, v in state["previous_chunks"]]


def _mean_var(values: list[float]) -> tuple[float, float]:
    """Mean and population variance in plain floats (inf rather than an exception on overflow)."""
    mean = sum(values) / len(values)
    return mean, sum((v - mean) * (v - mean) for v in values) / len(values)


def _lowered(value: float, fraction: float) -> float:
    """``value`` made ``fraction`` better (lower), whatever its sign."""
    return value - fraction * abs(value)


def _quadratic_residuals(values: list[float]) -> list[float]:
    """Residuals of a least-squares fit of ``a + b x + c x^2`` (x = 0..n-1)."""
    n = len(values)
    xs = [i / (n - 1) for i in range(n)]
    # Normal equations of the 3-parameter fit, solved by Cramer's rule (3x3, well conditioned on [0, 1]).
    s = [sum(x ** k for x in xs) for k in range(5)]
    r = [sum(v * x ** k for v, x in zip(values, xs)) for k in range(3)]
    matrix = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]]
    det = _det3(matrix)
    coef = []
    for col in range(3):
        m = [row[:] for row in matrix]
        for row in range(3):
            m[row][col] = r[row]
        coef.append(_det3(m) / det)
    return [v - (coef[0] + coef[1] * x + coef[2] * x * x) for v, x in zip(values, xs)]


def _det3(m: list[list[float]]) -> float:
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
