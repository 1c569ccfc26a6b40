"""One non-finite event, one diagnosis.

A NaN shows up in many places at once: the gradients of the step it enters, the loss of the next
step, every later loss (the loss rules call that divergence), the inputs if it came from there.
Each callback sees its own part, and each part would be a critical diagnosis with its own causes.
:class:`NonfiniteEvents` keeps the first non-finite finding of a fit as the event and turns every
later one that belongs to it (within ``gap_steps`` of the event's last finding) into an ``info``
note that names the event. A non-finite finding after a longer finite stretch opens a new event.
"""

from __future__ import annotations

import dataclasses

from lightning_convergence.rules.findings import Finding

NONFINITE_KINDS = frozenset({"nonfinite_loss", "nonfinite_gradients", "nonfinite_inputs"})
GAP_STEPS = 100


def is_nonfinite(finding: Finding) -> bool:
    """Whether ``finding`` reports NaN/Inf values (a divergence counts when its losses were
    non-finite, not when they only climbed).

    Example:
        >>> is_nonfinite(Finding("divergence", "critical", "NaN.", evidence={"nonfinite_steps": 7}))
        True
        >>> is_nonfinite(Finding("divergence", "critical", "Up.", evidence={"loss_ema": 4.0}))
        False
    """
    return finding.kind in NONFINITE_KINDS or (finding.kind == "divergence" and "nonfinite_steps" in finding.evidence)


class NonfiniteEvents:
    """The non-finite events of one fit.

    Args:
        gap_steps: non-finite findings further apart than this (in optimizer steps) are
            separate events.

    Example:
        >>> events = NonfiniteEvents()
        >>> grads = Finding("nonfinite_gradients", "critical", "Gradients were NaN at step 2.")
        >>> events.fold(grads, step=2).severity
        'critical'
        >>> later = events.fold(Finding("nonfinite_loss", "critical", "The loss was NaN."), step=3)
        >>> later.severity, later.evidence["event_kind"], later.evidence["event_step"]
        ('info', 'nonfinite_gradients', 2)
    """

    def __init__(self, gap_steps: int = GAP_STEPS) -> None:
        self.gap_steps = gap_steps
        self._event: tuple[str, int] | None = None  # (kind, step) of the open event's first finding
        self._last_step: int | None = None

    def fold(self, finding: Finding, step: int) -> Finding:
        """``finding`` itself when it is not non-finite, or it opens an event; else its ``info``
        form, naming the event it belongs to."""
        if finding.severity == "info" or not is_nonfinite(finding):
            return finding
        if self._event is None or self._last_step is None or step - self._last_step > self.gap_steps:
            self._event, self._last_step = (finding.kind, step), step
            return finding
        self._last_step = max(self._last_step, step)
        kind, first = self._event
        seen = (f"Part of the non-finite event reported as {kind} at step {first} (one event, one diagnosis): "
                f"{finding.observation}")
        return dataclasses.replace(finding, severity="info", observation=seen,
                                   evidence={**finding.evidence, "event_kind": kind, "event_step": first})
