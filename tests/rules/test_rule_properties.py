"""Property tests for the rules without one elsewhere: arbitrary finite and non-finite inputs give
no exception and findings of valid kinds and severities (RELIABILITY F)."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.rules.findings import DIAGNOSIS_KINDS, SEVERITIES
from lightning_convergence.rules.data_wait import DataWaitRule
from lightning_convergence.rules.input_health import InputHealthRule, PartSummary
from lightning_convergence.rules.loss_regime import OverfitRule
from lightning_convergence.rules.unit_health import LayerUnits, UnitHealthRule

anything = st.floats(allow_nan=True, allow_infinity=True)
small_int = st.integers(0, 1000)


def valid(findings):
    for finding in findings:
        assert finding.kind in DIAGNOSIS_KINDS and finding.severity in SEVERITIES and finding.message
    return True


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 200), st.one_of(st.none(), anything),
                          st.one_of(st.none(), anything), st.one_of(st.none(), anything)), min_size=1, max_size=6))
def test_unit_health_rule(windows):
    rule = UnitHealthRule()
    for units, dead, saturation, dead_bias, live_bias in windows:
        dead = min(dead, units)
        layer = LayerUnits("l", "ReLU", units, dead=dead, dormant=dead, saturation=saturation, batches=4,
                           first_step=0, last_step=9, dead_bias_mean=dead_bias, live_bias_mean=live_bias)
        assert valid(rule.evaluate([layer]))


@settings(max_examples=100, deadline=None)
@given(st.lists(anything, min_size=0, max_size=8), st.lists(anything, min_size=0, max_size=8), small_int,
       st.one_of(st.none(), anything), st.one_of(st.none(), anything), st.one_of(st.none(), st.integers(2, 50)))
def test_input_health_rule(means, rms, nonfinite, low, high, classes):
    rms = rms[: len(means)]
    means = means[: len(rms)]
    parts = [PartSummary("batch[0]", True, 3, means=means, rms=rms, nonfinite=nonfinite),
             PartSummary("batch[1]", False, 3, low=low, high=high, is_target=True)]
    assert valid(InputHealthRule(num_classes=classes).evaluate(parts))


@settings(max_examples=100, deadline=None)
@given(anything, anything, st.integers(0, 100), st.one_of(st.none(), st.integers(0, 16)))
def test_data_wait_rule(wait, busy, batches, workers):
    finding = DataWaitRule().evaluate(wait, busy, batches, 0, 9, workers)
    if finding is not None:
        assert valid([finding]) and 0 <= finding.evidence["wait_fraction"] <= 1 or not math.isfinite(wait + busy)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(anything, st.one_of(st.none(), anything)), min_size=1, max_size=30),
       st.sampled_from(["min", "max"]))
def test_overfit_rule(checks, mode):
    rule = OverfitRule(mode=mode)
    for step, (value, train) in enumerate(checks):
        finding = rule.update(value, train, step)
        if finding is not None:
            assert valid([finding]) and finding.kind == "overfitting"
