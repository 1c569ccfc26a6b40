"""Where the wall time goes: every second between two marks charged to exactly one phase.

A training run is a sequence of marks (a hook starts, a fetch ends, a callback returns). The
:class:`PhaseTimeline` keeps the phase the run is in (the *base* phase: fetching, forward,
validation, ...) and a stack of phases that interrupt it (a callback's hook, a checkpoint being
written), and at every mark it charges the time since the last mark to the phase on top. So the
phases add up to the wall time, nothing is counted twice, and a phase nobody marked shows up as
``other`` instead of silently inflating its neighbour.

Garbage-collection pauses are taken out of whatever phase they interrupted: :meth:`gc_pause`
(called from ``gc.callbacks``) only adds to a pending amount, which the next mark moves from the
interrupted phase to ``gc``. That makes it safe to call from inside a collection that starts in
the middle of a mark.

Pure Python: no Lightning, no torch. Both clocks are injected (seconds, as floats), so that tests
are deterministic whatever the machine's load.

Example:
    >>> now = [0.0]
    >>> timeline = PhaseTimeline(clock=lambda: now[0])
    >>> timeline.start("fetch")
    >>> now[0] = 0.004; _ = timeline.switch("forward")  # each mark returns the clock it read
    >>> now[0] = 0.005; _ = timeline.push("callbacks")
    >>> now[0] = 0.006; _ = timeline.pop()
    >>> now[0] = 0.010; step = timeline.take_step()
    >>> {k: round(v * 1000, 3) for k, v in step.items() if v}
    {'fetch': 4.0, 'forward': 5.0, 'callbacks': 1.0}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

PHASES: tuple[str, ...] = (
    "fetch",  # the next training batch, within an epoch
    "epoch_start",  # the first batch of an epoch: the loader's iterator and its workers starting (and stopping)
    "forward",  # training_step
    "backward",
    "optimizer",  # the optimizer step itself (zero_grad, clipping and the update)
    "validation",  # the validation loop, its loader included
    "checkpointing",  # writing checkpoints
    "logging",  # the logger connector between batches: metrics reduced and written to the loggers
    "callbacks",  # every callback's hooks (ours included), less checkpoints they write
    "gc",  # garbage-collection pauses, whichever phase they interrupted
    "other",  # anything not marked (scheduler steps, the loops' own work)
)
"""The phases of a training run, in the order a step goes through them."""

COMPUTE_PHASES: tuple[str, ...] = ("forward", "backward", "optimizer")


def zero_phases() -> dict[str, float]:
    """``{phase: 0.0}`` for every phase."""
    return dict.fromkeys(PHASES, 0.0)


class PhaseTimeline:
    """Charges every second between marks to one phase, per step and for the whole run.

    Args:
        clock: wall clock in seconds (monotonic); ``time.perf_counter`` by default.

    Raises:
        ValueError: an unknown phase name.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or time.perf_counter
        self.totals = zero_phases()  # seconds per phase since start()
        self._step = zero_phases()  # seconds per phase since the last take_step()
        self._base = "other"
        self._stack: list[str] = []
        self._last: float | None = None
        self._gc_pending = 0.0
        self._gc_started: float | None = None

    @property
    def running(self) -> bool:
        return self._last is not None

    @property
    def phase(self) -> str:
        """The phase time is charged to now."""
        return self._stack[-1] if self._stack else self._base

    @property
    def base(self) -> str:
        return self._base

    def start(self, phase: str = "other") -> None:
        """Start (or restart) the clock in ``phase``; time before it is not charged."""
        _check(phase)
        self._base, self._stack, self._gc_pending = phase, [], 0.0
        self._last = self.clock()

    def stop(self) -> None:
        """Charge the time up to now and stop: marks before the next :meth:`start` are ignored."""
        self._charge()
        self._last = None
        self._stack = []

    def switch(self, phase: str) -> float:
        """Charge the time up to now, then continue in base phase ``phase``; returns the clock."""
        _check(phase)
        now = self._charge()
        self._base = phase
        return now

    def push(self, phase: str) -> float:
        """Charge the time up to now, then charge to ``phase`` until the matching :meth:`pop`;
        returns the clock."""
        _check(phase)
        now = self._charge()
        self._stack.append(phase)
        return now

    def pop(self) -> float:
        """End the phase of the last :meth:`push` (nothing happens on an empty stack); returns the clock."""
        now = self._charge()
        if self._stack:
            self._stack.pop()
        return now

    def gc_pause(self, seconds: float) -> None:
        """A garbage-collection pause of ``seconds`` just ended: the next mark moves it to ``gc``.
        Safe to call from ``gc.callbacks`` at any moment (it only adds to a number)."""
        if seconds > 0:
            self._gc_pending += seconds

    def gc_callback(self, phase: str, info: dict) -> None:
        """For ``gc.callbacks``: times each collection and takes it out of the phase it interrupted.
        The interpreter calls it inside any allocation, so it touches numbers only."""
        if phase == "start":
            self._gc_started = self.clock()
        elif self._gc_started is not None:
            self.gc_pause(self.clock() - self._gc_started)
            self._gc_started = None

    def take_step(self) -> dict[str, float]:
        """Charge the time up to now; the seconds per phase since the last call (and reset)."""
        self._charge()
        step, self._step = self._step, zero_phases()
        return step

    def _charge(self) -> float:
        # On every mark (several per callback hook): kept to a clock read and two additions.
        if self._last is None:
            return math.nan
        now = self.clock()
        elapsed = now - self._last if now > self._last else 0.0
        self._last = now
        if self._gc_pending:
            paused = min(self._gc_pending, elapsed)
            self._gc_pending = 0.0
            elapsed -= paused
            self.totals["gc"] += paused
            self._step["gc"] += paused
        phase = self._stack[-1] if self._stack else self._base
        self.totals[phase] += elapsed
        self._step[phase] += elapsed
        return now


_KNOWN = frozenset(PHASES)


def _check(phase: str) -> None:
    if phase not in _KNOWN:
        raise ValueError(f"`phase` must be one of {PHASES}, got {phase!r}.")
