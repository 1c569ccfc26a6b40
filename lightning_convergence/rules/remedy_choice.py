"""Which remedy follows a finding: chosen from its top cause, not from its symptom alone.

A divergence caused by gradients that are never zeroed is not cured by a lower learning rate,
and a run that does not learn because its labels are shuffled is not cured by a higher one.
:func:`remedy_for` reads the top cause of a finding (ranked from the evidence, ``rules.causes``):

- a cause in the user's code or data (:data:`CODE_CAUSES`), named by evidence: no automatic
  action; the diagnosis says what to change;
- ``learning_rate_too_low``, named by evidence: raise the learning rate by the measured amount
  (:func:`raise_factor`), except when it is exactly 0 (a schedule that reached 0: no factor
  can help, the schedule must change);
- otherwise: the kind's usual remedy (a lower learning rate and a rollback on divergence, ...).

A cause that only comes from the kind's usual list (no evidence) never stops the usual remedy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from lightning_convergence.rules.findings import Cause

CODE_CAUSES = frozenset({
    "stale_gradients", "gradient_flow_cut", "wrong_loss_for_task", "labels_mismatched", "unshuffled_data",
    "non_differentiable_operation", "invalid_targets", "nonfinite_data", "unnormalized_targets",
    "unnormalized_inputs",
})
"""Causes in the user's code or data: no learning rate fixes them."""

Remedy = Literal["usual", "raise_lr", "none"]

# Runs that converged on the sweep's tuning half moved their weights by 3.3e-3 (10th percentile) to
# 9e-3 (median) of their norm per step after the first steps; a raise aims at the lower end.
TARGET_UPDATE_RATIO = 5e-3
MAX_RAISE = 100.0


def top_evidenced(causes: Sequence[Cause]) -> Cause | None:
    """The top cause when evidence names it (it carries numbers), else ``None``.

    Example:
        >>> top_evidenced([Cause("labels_mismatched", 0.3)]) is None
        True
        >>> top_evidenced([Cause("stale_gradients", 0.9, {"grad_norm_growth": 3.0})]).cause
        'stale_gradients'
    """
    return causes[0] if causes and causes[0].evidence else None


def remedy_for(causes: Sequence[Cause]) -> Remedy:
    """The remedy for a finding whose ranked causes are ``causes``.

    Example:
        >>> remedy_for([Cause("stale_gradients", 0.9, {"grad_norm_growth": 3.0})])
        'none'
        >>> remedy_for([Cause("learning_rate_too_low", 0.7, {"update_ratio_median": 1e-5})])
        'raise_lr'
        >>> remedy_for([Cause("learning_rate_too_low", 0.95, {"learning_rate": 0.0})])
        'none'
        >>> remedy_for([Cause("learning_rate_too_high", 0.5)])
        'usual'
    """
    top = top_evidenced(causes)
    if top is None:
        return "usual"
    if top.cause in CODE_CAUSES:
        return "none"
    if top.cause == "learning_rate_too_low":
        return "raise_lr" if raise_factor(top.evidence.get("update_ratio_median")) is not None else "none"
    return "usual"


def lr_named_too_high(causes: Sequence[Cause], measured_after: int | None = None) -> bool:
    """Whether the top cause is a learning rate too high, named by the update ratios (measured
    after step ``measured_after``, the last LR cut, when given).

    Example:
        >>> lr_named_too_high([Cause("learning_rate_too_high", 0.6, {"update_ratio_peak": 0.4})])
        True
        >>> lr_named_too_high([Cause("learning_rate_too_high", 0.6)])  # the kind's usual list only
        False
        >>> lr_named_too_high([Cause("learning_rate_too_high", 0.6, {"update_ratio_median": 0.4, "step": 3})],
        ...                   measured_after=40)  # measured before the last cut: stale
        False
    """
    top = top_evidenced(causes)
    if top is None or top.cause != "learning_rate_too_high":
        return False
    measured = top.evidence.get("step")
    if measured_after is not None and (not isinstance(measured, int) or measured <= measured_after):
        return False
    return any(key.startswith("update_ratio") for key in top.evidence)


def named_too_high(diagnoses: Sequence, measured_after: int | None = None) -> str | None:
    """The kind of the first warning in ``diagnoses`` (records with ``kind``, ``severity`` and
    ``causes`` as dicts) whose top cause is a learning rate too high, named by the update ratios,
    other than a divergence or an oscillation (their own remedy answers them); else ``None``. A
    rule's own evidence (a dead layer's negative biases) names a bad initialization as well.
    ``measured_after``: the step of the last LR cut; ratios measured at or before it describe the
    rate before the cut, and name nothing now.

    Example:
        >>> from types import SimpleNamespace as D
        >>> top = [{"cause": "learning_rate_too_high", "evidence": {"update_ratio_peak": 0.4}}]
        >>> named_too_high([D(kind="dead_units", severity="warning", causes=top)])
        'dead_units'
        >>> named_too_high([D(kind="divergence", severity="critical", causes=top)]) is None
        True
        >>> old = [{"cause": "learning_rate_too_high", "evidence": {"update_ratio_median": 0.4, "step": 3}}]
        >>> named_too_high([D(kind="dead_units", severity="warning", causes=old)], measured_after=50) is None
        True
    """
    for d in diagnoses:
        top = d.causes[0] if d.causes else {}
        evidence = top.get("evidence") or {}
        measured = evidence.get("step")
        stale = measured_after is not None and (not isinstance(measured, int) or measured <= measured_after)
        if (d.severity != "info" and d.kind not in ("divergence", "oscillation")
                and top.get("cause") == "learning_rate_too_high" and not stale
                and any(key.startswith("update_ratio") for key in evidence)):
            return d.kind
    return None


def raise_factor(update_ratio: float | None) -> float | None:
    """How much to raise a learning rate whose updates move the weights by ``update_ratio`` of
    their norm per step: to :data:`TARGET_UPDATE_RATIO` (the ratio scales with the learning
    rate: exactly for SGD, about for Adam), at least 2x and at most :data:`MAX_RAISE`; ``None``
    when nothing can be measured (no ratio, or 0: a learning rate of 0 is raised by no factor).

    Example:
        >>> raise_factor(5e-5), raise_factor(2e-3), raise_factor(1e-9), raise_factor(0.0)
        (100.0, 2.5, 100.0, None)
    """
    if update_ratio is None or not math.isfinite(update_ratio) or update_ratio <= 0:
        return None
    return min(MAX_RAISE, max(2.0, TARGET_UPDATE_RATIO / update_ratio))
