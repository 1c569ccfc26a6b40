"""The recovery policy of the loss regime: which remedy follows which finding, as plain state.

Fed the kinds found in a window and whether the window was steady, it returns actions (scale the
learning rate with a reason, take a snapshot, roll back, stop) and keeps its counters itself:
when the last snapshot was taken, the step of the last rollback (a re-warmup ramps up from
there), how many recoveries failed in a row, whether the LR was raised once. The caller applies
the actions (``remedies/snapshot``, ``remedies/lr_factors``, ``remedies/warmup``); nothing here
touches a model, an optimizer or a Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_convergence.remedies.warmup import warmup_factor
from lightning_convergence.rules.findings import Finding
from lightning_convergence.validation import check_bool, check_nonnegative_int, check_open_fraction, check_positive_int

ActionKind = Literal["lr_scale", "snapshot", "rollback", "stop"]

# A snapshot is stale once the smoothed loss fell this much below the loss when it was taken: a
# rollback to it would then undo real progress. Until then a steady window keeps it (a snapshot
# costs a copy of the weights and the optimizer state: about 40 ms every window on the overhead
# benchmark's 12.9M-parameter MLP with Adam, when taken at every window).
STALE_FALL = 0.05


@dataclass(frozen=True)
class Action:
    """One thing to do: ``lr_scale`` by ``factor`` because of ``reason``, ``snapshot``,
    ``rollback`` (to the last snapshot) or ``stop``. ``detail`` is plain JSON for the report's
    intervention; ``finding``, when set, is what to tell the user about it."""

    kind: ActionKind
    reason: str = ""
    factor: float = 1.0
    detail: dict[str, Any] = field(default_factory=dict)
    finding: Finding | None = None


class RecoveryPolicy:
    """Divergence: cut the LR and roll back to the last steady snapshot, then ramp the LR up
    again over ``rewarmup_steps``; after ``max_recoveries`` rollbacks without a steady window
    in between, stop. A learning rate too high named by evidence: roll back before the caller's
    LR cut when that loses no progress (:meth:`rollback_before_cut`). Oscillation: cut the LR. A learning rate too low (named by evidence):
    raise it by the measured factor. No learning without that evidence: raise the LR tenfold,
    once, if asked. A kind whose top cause is in the user's code: nothing.
    Overfitting (found at a validation check): stop, if asked.

    Args:
        divergence_factor: LR multiplier on divergence and oscillation, in (0, 1).
        rollback: roll back on divergence (else only cut the LR).
        snapshot_every_n_steps: steps between snapshots of steady windows; ``None``: a steady window
            whose loss fell :data:`STALE_FALL` below the last snapshot's (every one when no loss is given).
        rewarmup_steps: length of the linear re-warmup after a rollback (0: none).
        max_recoveries: failed recoveries in a row after which training stops.
        raise_lr_on_no_learning: raise the LR tenfold, once, on ``no_learning``.
        stop_on_overfit: stop training when overfitting is found.

    Raises:
        ValueError: an argument is out of range.
        TypeError: an argument has the wrong type.

    Example:
        >>> policy = RecoveryPolicy(divergence_factor=0.1, max_recoveries=1)
        >>> [a.kind for a in policy.start(step=0)]
        ['snapshot']
        >>> [(a.kind, a.reason) for a in policy.on_window(["divergence"], steady=False, step=50)]
        [('lr_scale', 'divergence'), ('rollback', 'divergence')]
        >>> [a.kind for a in policy.on_window(["divergence"], steady=False, step=100)]
        ['lr_scale', 'stop']
    """

    def __init__(
        self,
        divergence_factor: float = 0.1,
        rollback: bool = True,
        snapshot_every_n_steps: int | None = None,
        rewarmup_steps: int = 0,
        max_recoveries: int = 3,
        raise_lr_on_no_learning: bool = False,
        stop_on_overfit: bool = False,
    ) -> None:
        check_open_fraction("divergence_factor", divergence_factor)
        check_bool("rollback", rollback)
        check_positive_int("snapshot_every_n_steps", snapshot_every_n_steps, allow_none=True)
        check_nonnegative_int("rewarmup_steps", rewarmup_steps)
        check_positive_int("max_recoveries", max_recoveries)
        check_bool("raise_lr_on_no_learning", raise_lr_on_no_learning)
        check_bool("stop_on_overfit", stop_on_overfit)
        self.divergence_factor = divergence_factor
        self.rollback = rollback
        self.snapshot_every_n_steps = snapshot_every_n_steps
        self.rewarmup_steps = rewarmup_steps
        self.max_recoveries = max_recoveries
        self.raise_lr_on_no_learning = raise_lr_on_no_learning
        self.stop_on_overfit = stop_on_overfit
        self.snapshot_step: int | None = None
        self.snapshot_loss: float | None = None  # the window's loss when the last snapshot was taken
        self._at_start = False  # the last snapshot is the one taken when training started
        self.rollback_step: int | None = None  # the start of the re-warmup, while one runs
        self.failed_recoveries = 0
        self.raised_lr = False
        # The loss of a classifier that learned nothing (``LossRegimeRule.chance_level``): a
        # fall must go below it too to be progress. A run that started above it (a bad
        # initialization) and fell to it has collapsed, not learned; such a state neither replaces
        # a snapshot nor keeps one from being rolled back to.
        self.chance_level: float | None = None

    def _progress_since_snapshot(self, loss: float) -> bool:
        """Whether the smoothed ``loss`` is :data:`STALE_FALL` below the snapshot's loss, and
        below chance level by as much."""
        if self.snapshot_loss is None:
            return False
        reference = self.snapshot_loss if self.chance_level is None else min(self.snapshot_loss, self.chance_level)
        return loss < (1 - STALE_FALL) * reference

    def start(self, step: int) -> list[Action]:
        """When training starts: its first weights are the first steady state to return to."""
        if self.rollback and self.snapshot_step is None:
            self.snapshot_step, self.snapshot_loss, self._at_start = step, None, True
            return [Action("snapshot")]
        return []

    def credit_start(self, loss: float | None) -> None:
        """Give the snapshot taken at the start the loss the run started at (known only once the
        first window is judged), so that a window replaces it only after the loss fell
        :data:`STALE_FALL` below that. A run that never learned (or collapsed at once) keeps its
        first weights to return to, not a collapsed state."""
        if self._at_start and self.snapshot_loss is None and loss is not None:
            self.snapshot_loss = loss

    def rollback_before_cut(self, step: int, loss: float | None) -> Action | None:
        """A rollback to the last snapshot before an LR cut for a learning rate too high, when
        it loses nothing: the smoothed ``loss`` now is not :data:`STALE_FALL` below the loss the
        snapshot was taken at, or not below chance by as much (``chance_level``) (a run that
        collapsed or stalled returns to where it was well, and starts again from there at the
        lower LR).
        ``None`` when there is no snapshot (or it was taken at this step), no loss to compare, or
        the run made progress since it."""
        if (not self.rollback or self.snapshot_step is None or self.snapshot_step >= step
                or self.snapshot_loss is None or loss is None or self._progress_since_snapshot(loss)):
            return None
        return Action("rollback", "learning_rate_too_high", detail={
            "to_step": self.snapshot_step, "loss_at_snapshot": self.snapshot_loss, "loss_now": loss})

    def on_window(self, kinds: list[str], steady: bool, step: int, hold: frozenset[str] | set[str] = frozenset(),
                  raise_by: float | None = None, loss: float | None = None) -> list[Action]:
        """The actions for one judged window: ``kinds`` found in it, ``steady`` when its loss is
        finite and settled (no divergence or oscillation among ``kinds``). ``hold``: kinds whose
        top cause is in the user's code or data (``rules.remedy_choice``): no learning rate
        answers them. ``raise_by``: the measured factor when the top cause is a learning rate
        too low. ``loss``: the window's smoothed loss; with it (and no ``snapshot_every_n_steps``)
        a steady window takes a snapshot only when the last one is stale (see :data:`STALE_FALL`)."""
        actions: list[Action] = []
        if "divergence" in kinds and "divergence" not in hold:
            actions.append(Action("lr_scale", "divergence", self.divergence_factor))
            if self.rollback and self.snapshot_step is not None:
                actions.append(self._roll_back(step))
        elif "oscillation" in kinds and "oscillation" not in hold:
            actions.append(Action("lr_scale", "oscillation", self.divergence_factor))
        elif steady:
            actions += self._steady(step, loss)
        if raise_by is not None:
            actions.append(Action("lr_scale", "learning_rate_too_low", raise_by))
        elif "no_learning" in kinds and "no_learning" not in hold and self.raise_lr_on_no_learning and not self.raised_lr:
            self.raised_lr = True
            actions.append(Action("lr_scale", "no_learning", 10.0))
        return actions

    def on_validation(self, kinds: list[str]) -> list[Action]:
        """The actions for the kinds found at one validation check."""
        return [Action("stop", "overfitting")] if "overfitting" in kinds and self.stop_on_overfit else []

    def _roll_back(self, step: int) -> Action:
        if self.rollback_step is not None:
            self.failed_recoveries += 1  # diverged again before a steady window
        if self.failed_recoveries >= self.max_recoveries:
            failed = self.failed_recoveries
            seen = (f"Training diverged again after {failed} rollbacks with a lower learning rate each time; it "
                    f"was stopped at step {step} because it is not recovering.")
            return Action("stop", "divergence", detail={"failed_recoveries": failed},
                          finding=Finding("divergence", "critical", seen, evidence={"failed_recoveries": failed}))
        self.rollback_step = step
        return Action("rollback", "divergence", detail={
            "to_step": self.snapshot_step, "failed_recoveries": self.failed_recoveries,
            "rewarmup_steps": self.rewarmup_steps})

    def _steady(self, step: int, loss: float | None = None) -> list[Action]:
        if self.rollback_step is not None:
            self.failed_recoveries = 0  # a steady window after a rollback: the recovery worked
            if not self.rewarmup_steps or step - self.rollback_step >= self.rewarmup_steps:
                self.rollback_step = None
        if not self.rollback:
            return []
        last = self.snapshot_step
        if self.snapshot_every_n_steps is not None:
            due = last is None or step - last >= self.snapshot_every_n_steps
        else:  # stale: the loss has fallen since it was taken (rolling back would lose that progress)
            due = last is None or loss is None or self.snapshot_loss is None or self._progress_since_snapshot(loss)
        if not due:
            return []
        self.snapshot_step, self.snapshot_loss, self._at_start = step, loss, False
        return [Action("snapshot")]

    def rewarmup_progress(self, step: int) -> int | None:
        """Optimizer steps since the rollback while a re-warmup runs, else ``None``."""
        if self.rollback_step is None or not self.rewarmup_steps:
            return None
        return step - self.rollback_step

    def rewarmup_factor(self, step: int) -> float:
        """The LR multiplier of the linear re-warmup at optimizer step ``step``: in (0, 1] while
        one runs after a rollback, else 1."""
        done = self.rewarmup_progress(step)
        return 1.0 if done is None else warmup_factor("linear", done, self.rewarmup_steps)

    def state_dict(self) -> dict[str, Any]:
        # A snapshot lives in host memory only: after a resume there is none until the next
        # steady window (which takes one whatever the loss did), so neither its step nor its loss
        # is part of the state. A rollback after a resume returns there, where the uninterrupted
        # run may return to an older snapshot.
        return {"rollback_step": self.rollback_step, "failed_recoveries": self.failed_recoveries,
                "raised_lr": self.raised_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollback_step = state.get("rollback_step")
        self.failed_recoveries = int(state.get("failed_recoveries", 0))
        self.raised_lr = bool(state.get("raised_lr", False))
