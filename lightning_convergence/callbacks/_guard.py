"""Do no harm, for the remedies of every callback: a remedy that changes the weights (ReDo) is
taken under a guard, judged by the callback that judges the loss, and undone if it did harm.

The guarded callback calls :func:`open_guard` right before it acts: the state of the model and
its optimizers is copied (an :class:`~lightning_convergence.remedies.snapshot.Snapshot`, about
3x the parameters in host memory with Adam, held only until the verdict) and a check opened
with the smoothed training loss of that moment. The loss judge (PlateauAdvisor) calls
:func:`judge_guards` at each of its windows: once a full window has passed, a loss worse by more
than the check's margin puts the state back, records an ``undo`` for the remedy's owner, and
blocks that remedy for the rest of the fit. Without a loss judge in the fit there is no guard:
the remedy acts as it would alone.

One remedy is judged at a time across the suite (:func:`remedy_pending`): while one waits for its
verdict no other acts, so no restore point can hold another remedy's effect, and a rollback or an
undo of PlateauAdvisor's closes the guards that were open (:func:`close_guards`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lightning.pytorch import Trainer

from lightning_convergence.recorder.records import Intervention
from lightning_convergence.remedies.snapshot import Snapshot
from lightning_convergence.rules.intervention_check import InterventionCheck, Verdict

if TYPE_CHECKING:
    from lightning_convergence.callbacks._context import RunContext


@dataclass
class Guard:
    """One owner's open check, the state from before its remedy, and what it may not do again."""

    source: str
    check: InterventionCheck = field(default_factory=InterventionCheck)
    before: Snapshot = field(default_factory=Snapshot)
    unpriced: tuple[str, int] | None = None  # (reason, step) of a remedy taken before any loss was judged


def judged(trainer: Trainer) -> bool:
    """Whether a callback of this fit judges the training loss (and so can judge a remedy)."""
    return any(getattr(c, "judges_loss", False) for c in trainer.callbacks)


def cuts_lr_when_named_too_high(trainer: Trainer) -> bool:
    """Whether an acting callback of this fit cuts the learning rate when a warning's top cause
    is a learning rate too high (PlateauAdvisor with ``auto_remediate=True``)."""
    return any(getattr(c, "cuts_lr_when_named_too_high", False) and c.is_acting(trainer) for c in trainer.callbacks)


def remedy_pending(context: RunContext) -> bool:
    """Whether any remedy of the suite still waits for its verdict."""
    return context.lr_remedy_pending or any(
        g.check.pending is not None or g.unpriced is not None for g in context.guards.values())


def may_act(context: RunContext, trainer: Trainer, owner: str, reason: str) -> bool:
    """Whether ``owner`` may act for ``reason`` now: not while a remedy waits for its verdict, and
    not after a remedy of ``owner`` for the same reason did harm (always, when nothing judges)."""
    if not judged(trainer):
        return True
    guard = context.guards.get(owner)
    return not remedy_pending(context) and (guard is None or guard.check.allowed(reason))


def open_guard(context: RunContext, trainer: Trainer, owner: str, source: str, reason: str, step: int) -> None:
    """Right before ``owner`` acts for ``reason`` at ``step`` (when :func:`may_act`): keep the
    state and open the check against the smoothed loss now, or, before the loss was judged once
    (a layer dead from the start is revived at the first window), against the loss at the start.
    Nothing when no callback of the fit judges the loss."""
    if not judged(trainer):
        return
    guard = context.guards.setdefault(owner, Guard(source))
    loss = context.evidence.snapshot().get("loss_ema")
    guard.before.take(trainer.lightning_module, trainer.optimizers, step)
    if loss is None:
        guard.unpriced = (reason, step)
    else:
        guard.check.open(reason, step, loss, noise=context.loss_noise)


def close_guards(context: RunContext) -> None:
    """Drop every open check and its state (a rollback or an undo restored an earlier state)."""
    for guard in context.guards.values():
        guard.check.pending, guard.unpriced = None, None
        guard.before.clear()


def judge_guards(context: RunContext, trainer: Trainer, loss_now: float | None, step: int,
                 min_steps: int, loss_start: float | None = None, noise: float = 0.0) -> list[Verdict]:
    """At a window of the loss: the verdicts on the guarded remedies due now (``loss_start``:
    the loss at the start, for remedies taken before any window; ``noise``: that of the
    difference of two smoothed losses, ``InterventionCheck.judge``); a harmful one is undone (its
    state put back) and recorded as ``undo`` by its owner. Returns the harmful ones."""
    undone = []
    for guard in context.guards.values():
        if guard.unpriced is not None and loss_start is not None:
            (reason, at), guard.unpriced = guard.unpriced, None
            guard.check.open(reason, at, loss_start)
        verdict = guard.check.judge(loss_now, step, min_steps, noise=noise)
        if verdict is None:
            continue
        if verdict.harmed:
            guard.before.restore(trainer.lightning_module, trainer.optimizers)
            context.revive_with_cut.clear()  # offered on weights that are gone
            context.log.add_intervention(Intervention("undo", step, guard.source, verdict.evidence()))
            undone.append(verdict)
        guard.before.clear()
    return undone
