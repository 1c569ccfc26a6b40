"""Severity from consequence: an unusual statistic is a warning only when the loss shows harm.

A gradient norm 60x its median, a layer with a quarter of its units silent: numbers like these
also turn up in runs that train well (a GRU learning a sequence task, a wide MLP). So an anomaly
of the statistics found at warning is first recorded as ``info``, held, and judged at the next
window of the loss: unless the smoothed training loss kept improving (fell by more than 1%), or
if the loss rules found divergence, oscillation, a non-finite loss or no learning, the anomaly is
recorded again as a warning, with the loss before and after; otherwise it stays ``info`` ("no
harm seen": the loss kept falling). Once the loss has made most of its progress from the start
(:func:`most_progress_made`), a flat loss is a settled run, and only a loss that got worse (by
more than 10%: near its floor the smoothed loss of a healthy run wanders by a few percent) is harm. A critical anomaly is never
held, and neither is anything when no loss is judged in the run (the caller decides).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lightning_convergence.rules.findings import Finding

ANOMALY_KINDS = frozenset({"exploding_gradients", "vanishing_gradients", "dead_units", "saturated_units",
                           "unnormalized_inputs"})
"""Statistical anomalies: the kinds whose severity follows their consequence."""
HARMFUL_KINDS = frozenset({"divergence", "oscillation", "nonfinite_loss", "no_learning"})
"""Loss findings that mean the run is being hurt."""
IMPROVING = 0.01  # a smoothed loss that ends more than 1% below where it was kept improving
WORSE = 0.1  # a settled loss that ends more than 10% above where it was got worse (minibatch noise is larger near 0)
MOST_PROGRESS = 0.5  # a value that has moved half of the way to 0 from where it started has made most of its progress


def most_progress_made(start: float | None, now: float | None) -> bool:
    """Whether a loss (or a metric) has made most of the progress it will make: ``now`` is at
    least ``MOST_PROGRESS`` of the larger magnitude away from ``start``. Past that point a flat
    loss is a run that has settled, not one being hurt.

    Example:
        >>> most_progress_made(2.3, 0.4), most_progress_made(2.3, 2.0), most_progress_made(0.1, 0.9)
        (True, False, True)
    """
    if start is None or now is None or not (math.isfinite(start) and math.isfinite(now)):
        return False
    return abs(now - start) >= MOST_PROGRESS * max(abs(start), abs(now))


@dataclass
class _Held:
    finding: Finding
    step: int
    loss_before: float | None
    source: str


class ConsequenceJudge:
    """Holds anomalies until the loss of the next window says whether they did harm.

    Example:
        >>> judge = ConsequenceJudge()
        >>> spike = Finding("exploding_gradients", "warning", "The gradient norm jumped 60x.")
        >>> judge.hold(spike, step=20, loss_now=0.9, source="GradientNormMonitor").severity
        'info'
        >>> judge.judge(loss_now=0.7, kinds=[])  # the loss kept improving: no harm, it stays info
        []
        >>> _ = judge.hold(spike, step=40, loss_now=0.7, source="GradientNormMonitor")
        >>> [(f.severity, step, source) for f, step, source in judge.judge(loss_now=2.5, kinds=[])]
        [('warning', 40, 'GradientNormMonitor')]
    """

    def __init__(self) -> None:
        self._held: list[_Held] = []

    @staticmethod
    def holds(finding: Finding) -> bool:
        """Whether ``finding`` waits for its consequence: a warning of an anomaly kind that was
        not already judged."""
        return finding.severity == "warning" and finding.kind in ANOMALY_KINDS and "loss_after" not in finding.evidence

    def hold(self, finding: Finding, step: int, loss_now: float | None, source: str) -> Finding:
        """Keep ``finding`` (found at ``step`` by ``source``, when the smoothed loss was
        ``loss_now``) to judge at the next loss window; returns what to record now: the ``info``
        form."""
        self._held.append(_Held(finding, step, loss_now, source))
        seen = f"{finding.observation.rstrip()} No harm seen yet: it becomes a warning if the loss gets worse."
        return dataclasses.replace(finding, severity="info", observation=seen)

    def release_unjudged(self) -> list[tuple[Finding, int, str]]:
        """At the end of a fit in which no loss was ever judged: every held anomaly, as a warning
        that says its harm could not be judged (an anomaly is not hidden for want of a loss).

        Example:
            >>> judge = ConsequenceJudge()
            >>> _ = judge.hold(Finding("dead_units", "warning", "30% silent."), 9, None, "DeadNeuronTracker")
            >>> [(f.severity, f.evidence["loss_after"]) for f, _, _ in judge.release_unjudged()]
            [('warning', None)]
        """
        held, self._held = self._held, []
        note = " The training loss was never seen, so whether it did harm could not be judged."
        return [(dataclasses.replace(item.finding, observation=item.finding.observation.rstrip() + note,
                                     evidence={**item.finding.evidence, "loss_after": None}), item.step, item.source)
                for item in held]

    def judge(self, loss_now: float | None, kinds: list[str],
              loss_start: float | None = None) -> list[tuple[Finding, int, str]]:
        """At a window of the loss (smoothed loss ``loss_now``, loss findings ``kinds``): the held
        anomalies that did harm, as warnings with the loss before and after, each with its step
        and source; every held anomaly is released. ``loss_start`` stands for the loss before an
        anomaly found before any window of the loss was judged (the loss at the start)."""
        held, self._held = self._held, []
        harmful = sorted(set(kinds) & HARMFUL_KINDS)
        out = []
        for item in held:
            before = item.loss_before if item.loss_before is not None else loss_start
            # Before most of the progress is made, a loss that stops improving is hurt; after it
            # (a settled run, flat near its floor), only a loss that gets worse is.
            settled = most_progress_made(loss_start, before)
            margin = (WORSE if settled else -IMPROVING) * abs(before) if before is not None else 0.0
            stalled = (before is not None and loss_now is not None and math.isfinite(before)
                       and (not math.isfinite(loss_now) or loss_now > before + margin))
            if not (stalled or harmful):
                continue
            if stalled:
                harm = (f"The training loss then went from {before:.4g} to {loss_now:.4g} instead of "
                        f"{'staying where it had settled' if settled else 'improving'}: the run is being hurt.")
            else:
                harm = f"The loss rules then found {', '.join(harmful)}: the run is being hurt."
            evidence = {**item.finding.evidence, "loss_before": before, "loss_after": loss_now}
            seen = f"{item.finding.observation.rstrip()} {harm}"
            out.append((dataclasses.replace(item.finding, observation=seen, evidence=evidence), item.step, item.source))
        return out
