"""Property tests for the rules without one elsewhere (RELIABILITY F): over arbitrary finite and
non-finite inputs, each rule decides what a plain reimplementation of its documented condition
decides, and its severity is monotone in the quantity it judges."""

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lightning_convergence.rules.input_health import InputHealthRule, PartSummary
from lightning_convergence.rules.overfit import OverfitRule
from lightning_convergence.rules.unit_health import LayerUnits, UnitHealthRule, UnitThresholds
from lightning_convergence.rules.wall_time import LoaderSettings, StepWindow, WallTimeRule

anything = st.floats(allow_nan=True, allow_infinity=True)
small_int = st.integers(0, 1000)
label = st.integers(-101, 51).map(float)  # class labels, with -100 (ignore_index) and both ends of the range


RANK = {None: -1, "info": 0, "warning": 1, "critical": 2}


def only_severity(findings, kind):
    """The severity of the one finding of ``kind`` (``None`` when there is none)."""
    matching = [f.severity for f in findings if f.kind == kind]
    assert len(matching) <= 1, findings
    return matching[0] if matching else None


def plain_dead_severity(fraction: float, t: UnitThresholds) -> str | None:
    if fraction < t.dead_info:
        return None
    return "critical" if fraction >= t.dead_critical else "warning" if fraction >= t.dead_warning else "info"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 200), anything,
                          st.one_of(st.none(), anything), st.one_of(st.none(), anything)), min_size=1, max_size=6),
       st.booleans())
def test_unit_health_rule_matches_a_plain_streak_count(windows, saturating):
    """A layer is reported once its dead fraction (saturation) has crossed the threshold in
    ``windows`` consecutive windows, or at once from ``dead_at_once``, with the severity of the
    latest fraction."""
    rule, t = UnitHealthRule(), UnitThresholds()
    dead_streak = saturation_streak = 0
    for units, dead, saturation, dead_bias, live_bias in windows:
        dead = min(dead, units)
        saturation = saturation if saturating else None  # a layer either can saturate or cannot
        layer = LayerUnits("l", "ReLU", units, dead=dead, dormant=dead, saturation=saturation, batches=4,
                           first_step=0, last_step=9, dead_bias_mean=dead_bias, live_bias_mean=live_bias)
        findings = rule.evaluate([layer])
        dead_streak = dead_streak + 1 if dead / units >= t.dead_info else 0
        reported = dead_streak >= t.windows or dead / units >= t.dead_at_once
        expected = plain_dead_severity(dead / units, t) if reported else None
        assert only_severity(findings, "dead_units") == expected
        if saturating:
            saturation_streak = saturation_streak + 1 if saturation >= t.saturation_warning else 0
        expected = "warning" if saturating and saturation_streak >= t.windows else None
        assert only_severity(findings, "saturated_units") == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.integers(0, 200), st.integers(0, 200))
def test_a_larger_dead_fraction_never_gives_a_lower_severity(units, a, b):
    def severity(dead):
        layer = LayerUnits("l", "ReLU", units, dead=dead, dormant=dead, saturation=None, batches=4,
                           first_step=0, last_step=9)
        return RANK[only_severity(UnitHealthRule(UnitThresholds(windows=1)).evaluate([layer]), "dead_units")]

    fewer, more = sorted((min(a, units), min(b, units)))
    assert severity(fewer) <= severity(more)


@settings(max_examples=100, deadline=None)
@given(st.lists(anything, min_size=0, max_size=8), st.lists(anything, min_size=0, max_size=8), small_int,
       st.one_of(st.none(), anything, label), st.one_of(st.none(), anything, label),
       st.one_of(st.none(), st.integers(2, 50)))
@example([], [], 0, 0.0, 10.0, 10)  # label 10 of 10 classes: out of range
@example([], [], 0, -100.0, 9.0, 10)  # ignore_index and the last class: in range
def test_input_health_rule_matches_its_documented_conditions(means, rms, nonfinite, low, high, classes):
    rms = rms[: len(means)]
    means = means[: len(rms)]
    parts = [PartSummary("batch[0]", True, 3, means=means, rms=rms, nonfinite=nonfinite),
             PartSummary("batch[1]", False, 3, low=low, high=high, is_target=True)]
    kinds = [f.kind for f in InputHealthRule(num_classes=classes).evaluate(parts)]
    assert kinds.count("nonfinite_inputs") == (nonfinite > 0)
    finite_rms = [r for r in rms if math.isfinite(r)]
    too_large = any(r > 5.0 for r in finite_rms)  # InputThresholds.scale_high
    offset_possible = any(abs(m) > 1 for m, r in zip(means, rms) if math.isfinite(r))
    if too_large:
        assert kinds.count("unnormalized_inputs") == 1
    elif not offset_possible:
        assert "unnormalized_inputs" not in kinds
    labels_out = (classes is not None and low is not None and high is not None
                  and ((low < 0 and low != -100) or high >= classes))
    assert kinds.count("invalid_targets") == labels_out


def _steps(pairs) -> StepWindow:
    window = StepWindow()
    for fetch, compute in pairs:
        window.add(fetch, compute, compute, compute, fetch + compute, 32)  # the process ran all the time
    return window


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(anything, anything), max_size=40))
@example([(0.030, 0.010)] * 20)
@example([(0.0, 0.0)] * 10 + [(1.0, 0.0)] * 9 + [(1.0, -1.0)])  # one impossible timing: found under load
def test_the_loader_is_judged_on_medians_as_documented(pairs):
    import statistics

    finding = WallTimeRule().judge_loader(_steps(pairs), LoaderSettings(num_workers=0, cpu_count=4), 0, 39)
    expected = None
    values = [v for pair in pairs for v in pair]
    if len(pairs) >= 20 and all(math.isfinite(v) and v >= 0 for v in values):
        fetch = statistics.median(f for f, _ in pairs)
        compute = statistics.median(c for _, c in pairs)
        share = fetch / (fetch + compute) if fetch + compute > 0 else 0.0
        cpu = sum(c for _, c in pairs) / sum(c for _, c in pairs) if sum(c for _, c in pairs) > 0 else 1.0
        if share >= 0.5 and 1000 * fetch >= 5.0 and cpu >= 0.5:  # fetch_share, min_fetch_ms, min_cpu_share
            expected = "warning"
    assert (finding.severity if finding else None) == expected
    if finding is not None:
        assert finding.evidence["suggested_num_workers"] >= 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), min_size=20, max_size=40), st.floats(1, 100))
def test_waiting_longer_never_lowers_the_severity(pairs, factor):
    def severity(scale):
        finding = WallTimeRule().judge_loader(_steps([(f * scale, c) for f, c in pairs]), LoaderSettings(), 0, 39)
        return RANK[finding.severity if finding else None]

    assert severity(1.0) <= severity(factor)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(anything, st.one_of(st.none(), anything)), min_size=1, max_size=30),
       st.sampled_from(["min", "max"]))
def test_overfit_rule_matches_a_plain_replay(checks, mode):
    """Reported when, for ``patience`` checks in a row, the metric was worse than its best by more
    than ``threshold`` of it while the training loss was below its value at the best; the best is
    the best finite value so far."""
    rule = OverfitRule(mode=mode, threshold=0.1, patience=2)
    sign = 1.0 if mode == "min" else -1.0
    best = train_at_best = None
    streak = 0
    for step, (value, train) in enumerate(checks):
        finding = rule.update(value, train, step)
        expected = False
        if math.isfinite(value):
            if best is None or sign * value < sign * best:
                best, train_at_best, streak = value, train, 0
            else:
                worse = sign * (value - best) > 0.1 * abs(best)
                falling = train is not None and train_at_best is not None and train < train_at_best
                streak = streak + 1 if worse and falling else 0
                expected = streak >= 2
        assert (finding is not None) == expected
        finite = [v for v, _ in checks[: step + 1] if math.isfinite(v)]
        assert rule.best == (None if not finite else min(finite) if mode == "min" else max(finite))
        if finding is not None:
            assert finding.kind == "overfitting" and finding.evidence["best"] == rule.best
