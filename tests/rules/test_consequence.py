"""Severity from consequence: held anomalies become warnings only when the loss shows harm."""

import math

import pytest

from lightning_convergence.rules.consequence import ANOMALY_KINDS, ConsequenceJudge
from lightning_convergence.rules.findings import Finding

SPIKE = Finding("exploding_gradients", "warning", "The gradient norm jumped 60x its median.")

# loss when found, loss at the next window, loss findings then, and whether it becomes a warning
TABLE = [
    (0.90, 0.70, [], False),  # the loss kept improving: no harm
    (0.90, 0.895, [], True),  # flat (under 1% better): not improving
    (0.90, 1.20, [], True),  # it rose
    (0.90, math.nan, [], True),  # it went NaN
    (0.90, 0.70, ["divergence"], True),  # the loss rules found harm
    (0.90, 0.70, ["plateau"], False),  # a plateau is not harm done by the anomaly
    (None, 0.70, [], False),  # no loss seen yet when it was found: only the rules can say
    (None, 0.70, ["nonfinite_loss"], True),
]


@pytest.mark.parametrize("before,after,kinds,warned", TABLE)
def test_an_anomaly_is_a_warning_only_when_the_loss_shows_harm(before, after, kinds, warned):
    judge = ConsequenceJudge()
    now = judge.hold(SPIKE, step=20, loss_now=before, source="GradientNormMonitor")
    assert now.severity == "info" and "No harm seen yet" in now.observation
    judged = judge.judge(loss_now=after, kinds=kinds)
    assert bool(judged) == warned
    if warned:
        finding, step, source = judged[0]
        assert (finding.severity, step, source) == ("warning", 20, "GradientNormMonitor")
        assert finding.evidence["loss_after"] is after or finding.evidence["loss_after"] == after
        assert "the run is being hurt" in finding.observation
        assert not ConsequenceJudge.holds(finding)  # judged once, not held again
    assert judge.judge(loss_now=after, kinds=kinds) == []  # released either way


@pytest.mark.parametrize("finding,held", [
    (SPIKE, True),
    (Finding("dead_units", "warning", "25% silent."), True),
    (Finding("dead_units", "critical", "All silent."), False),  # critical: said at once
    (Finding("exploding_gradients", "info", "One spike."), False),
    (Finding("divergence", "warning", "Rising."), False),  # a loss finding is harm itself
    (Finding("nonfinite_gradients", "critical", "NaN."), False),
])
def test_which_findings_wait(finding, held):
    assert ConsequenceJudge.holds(finding) == held


def test_the_anomaly_kinds_are_unusual_numbers_not_events():
    # An input scale far from 1 is a number too: a BatchNorm right after the input makes it harmless.
    assert ANOMALY_KINDS == {"exploding_gradients", "vanishing_gradients", "dead_units", "saturated_units",
                             "unnormalized_inputs"}


# loss at the start, when found, at the next window: once most progress is made, only worse is harm
SETTLED = [
    (2.30, 0.40, 0.40, False),  # settled near its floor, flat: no harm
    (2.30, 0.40, 0.399, False),
    (2.30, 0.40, 0.43, False),  # settled, wandering by a few percent
    (2.30, 0.40, 0.45, True),  # settled, then worse
    (2.30, 2.00, 2.00, True),  # little progress made: flat is harm
    (2.30, 2.00, 1.90, False),
]


@pytest.mark.parametrize("start,before,after,warned", SETTLED)
def test_a_settled_loss_is_hurt_only_by_getting_worse(start, before, after, warned):
    judge = ConsequenceJudge()
    judge.hold(SPIKE, step=150, loss_now=before, source="DeadNeuronTracker")
    judged = judge.judge(loss_now=after, kinds=[], loss_start=start)
    assert bool(judged) == warned
    if warned and before < start / 2:
        assert "instead of staying where it had settled" in judged[0][0].observation


def test_an_anomaly_found_before_any_loss_window_is_judged_against_the_start():
    judge = ConsequenceJudge()
    judge.hold(SPIKE, step=5, loss_now=None, source="GradientNormMonitor")
    assert [f.evidence["loss_before"] for f, _, _ in judge.judge(loss_now=2.30, kinds=[], loss_start=2.31)] == [2.31]
    judge.hold(SPIKE, step=5, loss_now=None, source="GradientNormMonitor")
    assert judge.judge(loss_now=1.2, kinds=[], loss_start=2.31) == []  # it fell: no harm
