"""Overfitting: the validation metric moving away from its best while the training loss keeps
falling, fed both at each validation check (the training loss smoothed through the same moment).

A training loss that falls from a level above where it started is a run recovering from a
divergence, not one that fits its training data too well: the rule needs the training loss
below its start (``train_start``) as well as below its value at the validation best. A rise of
the metric is ``info`` while it is small (under ``warning_rise`` of the best: validation
metrics on a few hundred samples move that much from check to check) and ``warning`` beyond.
"""

from __future__ import annotations

import math

from lightning_convergence.rules.findings import Finding


class OverfitRule:
    """Validation metric moving away from its best while the training loss keeps falling.

    Args:
        mode: ``"min"`` if a lower validation metric is better.
        threshold: relative distance from the best that counts as worse.
        patience: consecutive validation checks that must be worse.
        warning_rise: relative distance from the best from which the finding is a ``warning``.

    Example:
        >>> rule = OverfitRule(patience=2)
        >>> [bool(rule.update(v, t, step)) for step, (v, t) in enumerate([(1.0, 1.0), (1.2, 0.8), (1.3, 0.6)])]
        [False, False, True]
        >>> rule.update(1.3, 0.5, 3).severity, OverfitRule(patience=1).update(1.0, 1.0, 0)
        ('warning', None)
    """

    def __init__(self, mode: str = "min", threshold: float = 0.1, patience: int = 2,
                 warning_rise: float = 0.25) -> None:
        self.mode, self.threshold, self.patience, self.warning_rise = mode, threshold, patience, warning_rise
        self.best: float | None = None
        self.best_step = -1
        self.train_at_best: float | None = None
        self.worse_checks = 0

    def _worse_by(self, value: float) -> float:
        """How far ``value`` is from the best, in the direction of worse (absolute)."""
        assert self.best is not None
        return value - self.best if self.mode == "min" else self.best - value

    def update(self, value: float, train_loss: float | None, step: int,
               train_start: float | None = None) -> Finding | None:
        """One validation check: ``value`` of the metric, ``train_loss`` smoothed through the
        same step, ``train_start`` the training loss at the start (when known)."""
        if not math.isfinite(value):
            return None
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.best_step, self.train_at_best, self.worse_checks = value, step, train_loss, 0
            return None
        worse = self._worse_by(value) > self.threshold * abs(self.best)
        train_falling = (train_loss is not None and self.train_at_best is not None and train_loss < self.train_at_best
                         and (train_start is None or not math.isfinite(train_start) or train_loss < train_start))
        self.worse_checks = self.worse_checks + 1 if worse and train_falling else 0
        if self.worse_checks < self.patience:
            return None
        rise = self._worse_by(value) / abs(self.best) if self.best else math.inf
        seen = (f"The validation metric moved from its best {self.best:.4g} (step {self.best_step}) to {value:.4g} "
                f"over {self.worse_checks} validation checks, while the training loss kept falling "
                f"({self.train_at_best:.4g} -> {train_loss:.4g}).")
        if rise < self.warning_rise:
            seen += f" A rise of {rise:.0%} is within what validation metrics move by; said as information."
        evidence = {"best": self.best, "best_step": self.best_step, "value": value, "train_loss": train_loss,
                    "train_at_best": self.train_at_best, "checks": self.worse_checks, "rise": rise}
        return Finding("overfitting", "warning" if rise >= self.warning_rise else "info", seen, evidence=evidence)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "train_at_best": self.train_at_best,
                "worse_checks": self.worse_checks}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = state["best"], int(state["best_step"])
        self.train_at_best, self.worse_checks = state["train_at_best"], int(state["worse_checks"])
