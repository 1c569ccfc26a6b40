"""When to reduce the learning rate on a plateau: the decisions of torch's ``ReduceLROnPlateau``.

The same ``mode``, ``threshold``, ``threshold_mode``, ``patience``, ``cooldown``, ``min_lr`` and
``eps`` semantics, so that a user who knows the scheduler knows this rule; a differential test
feeds both the same metric sequences and compares every reduction. It is fed floats and returns
the new learning rates, and changes no optimizer: the callback applies them as a factor.
"""

from __future__ import annotations

import math
from typing import Literal

from lightning_convergence.rules.consequence import most_progress_made
from lightning_convergence.rules.findings import Finding
from lightning_convergence.validation import check_nonnegative_float, check_nonnegative_int, check_open_fraction

Mode = Literal["min", "max"]
ThresholdMode = Literal["rel", "abs"]


class PlateauSchedule:
    """Counts checks without improvement and says when, and to what, to reduce the LR.

    Args:
        mode: ``"min"`` (a lower metric is better) or ``"max"``.
        factor: multiplier of the LR at a reduction, in (0, 1).
        patience: checks without improvement tolerated; the next one reduces.
        threshold: how much better counts as an improvement.
        threshold_mode: ``"rel"`` (relative to the best) or ``"abs"``.
        cooldown: checks after a reduction during which bad checks are not counted.
        min_lr: lower bound of the LR, one for all groups or one per group.
        eps: a reduction smaller than this is not made.

    Example:
        >>> schedule = PlateauSchedule(patience=1, factor=0.5)
        >>> [schedule.step(v, [1.0]) for v in (3.0, 2.0, 2.0, 2.0)]
        [None, None, None, [0.5]]
    """

    def __init__(self, mode: Mode = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: ThresholdMode = "rel", cooldown: int = 0, min_lr: float | list[float] = 0.0,
                 eps: float = 1e-8) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}.")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"`threshold_mode` must be 'rel' or 'abs', got {threshold_mode!r}.")
        check_open_fraction("factor", factor)
        check_nonnegative_int("patience", patience)
        check_nonnegative_int("cooldown", cooldown)
        check_nonnegative_float("threshold", threshold)
        check_nonnegative_float("eps", eps)
        for value in (min_lr if isinstance(min_lr, list) else [min_lr]):
            check_nonnegative_float("min_lr", value)
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.first: float | None = None  # the first finite value checked
        self.bad_checks = 0
        self.cooldown_counter = 0

    def is_better(self, value: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return value < best * (1.0 - self.threshold)
        if self.mode == "min":
            return value < best - self.threshold
        if self.threshold_mode == "rel":
            return value > best * (self.threshold + 1.0)
        return value > best + self.threshold

    def step(self, value: float, lrs: list[float]) -> list[float] | None:
        """Take one check of the metric; return the reduced LRs when it is time, else ``None``.

        A NaN is a check without improvement (as for torch). When every group is already at its
        floor (the change would be below ``eps``) nothing is returned, though the counters reset.
        """
        return self._reduced(lrs) if self._due(value) else None

    def _due(self, value: float) -> bool:
        """Count one check; ``True`` when a reduction is due (the counters then start over)."""
        if self.is_better(value, self.best):
            self.best = value
            self.bad_checks = 0
        else:
            self.bad_checks += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.bad_checks = 0
        if self.bad_checks <= self.patience:
            return False
        self.cooldown_counter = self.cooldown
        self.bad_checks = 0
        return True

    def _reduced(self, lrs: list[float]) -> list[float] | None:
        """The reduced LRs, or ``None`` when every group is at its floor."""
        floors = self.min_lr if isinstance(self.min_lr, list) else [self.min_lr] * len(lrs)
        new = [max(lr * self.factor, floor) for lr, floor in zip(lrs, floors)]
        changed = [n if lr - n > self.eps else lr for lr, n in zip(lrs, new)]
        return changed if changed != list(lrs) else None

    def check(self, value: float, lrs: list[float], what: str, acting: bool,
              hold: bool = False) -> tuple[Finding | None, list[float]]:
        """One check of the metric ``value`` (named ``what`` in the message), as a finding.

        Returns ``(None, [])`` while no reduction is due, when ``hold`` (no progress was made
        yet: that is ``no_learning``, not a plateau), or when ``value`` is NaN/Inf (a non-finite
        metric is one event, reported as such by the loss rules, not also a plateau; the
        check still counts as one without improvement, as for torch). Else a ``plateau``
        finding, ``info`` when ``acting`` (the LR is reduced) or when the metric had made most of
        its progress from its first value (a run that may have converged), ``warning`` otherwise
        (and when every group is at its floor, where nothing can be reduced), and the multiplier of each of
        ``lrs``.

        Example:
            >>> schedule = PlateauSchedule(patience=0, factor=0.5)
            >>> schedule.check(2.0, [1.0], "the loss", acting=True)
            (None, [])
            >>> finding, multipliers = schedule.check(2.0, [1.0], "the loss", acting=True)
            >>> finding.severity, multipliers
            ('info', [0.5])
        """
        if self.first is None and math.isfinite(value):
            self.first = value
        if not self._due(value) or hold or not math.isfinite(value):
            return None, []
        new = self._reduced(lrs)
        seen = (f"{what} has not improved on its best {self.best:.4g} for more than {self.patience} checks "
                f"(now {value:.4g}).")
        evidence = {"value": value, "best": self.best, "patience": self.patience}
        if new is None:  # nothing left to reduce: a plateau no schedule step can answer
            seen += f" The learning rate is already at its floor ({min(lrs, default=0.0):.3g}), so it is not reduced."
            finding = Finding("plateau", "warning", seen, evidence={**evidence, "lr": min(lrs, default=0.0)})
            return finding, [1.0] * len(lrs)
        if acting:
            seen += f" The learning rate is multiplied by {self.factor}."
        settled = most_progress_made(self.first, self.best)
        if settled and not acting:
            seen += (f" It had made most of its progress first (from {self.first:.4g}): the run may have converged; "
                     f"a lower learning rate may still gain a little.")
        finding = Finding("plateau", "info" if acting or settled else "warning", seen,
                          evidence={**evidence, "first": self.first})
        return finding, [n / o if o else 1.0 for n, o in zip(new, lrs)]

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_checks": self.bad_checks, "cooldown_counter": self.cooldown_counter,
                "first": self.first}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.first = state.get("first")
        self.bad_checks = int(state["bad_checks"])
        self.cooldown_counter = int(state["cooldown_counter"])
