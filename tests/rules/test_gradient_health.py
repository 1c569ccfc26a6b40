"""Host-side gradient rules, with tables of window summaries (no Trainer)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.rules import GradientHealthRule, GradientThresholds
from lightning_convergence.rules.gradient_window import _empty_summary


def _summary(layers, **fields):
    summary = _empty_summary(len(layers))
    summary.steps = 10
    for key, value in fields.items():
        setattr(summary, key, value)
    return summary


def _kinds(rule, summary, **kwargs):
    return [(f.kind, f.severity) for f in rule.evaluate(summary, **kwargs)]


def test_healthy_window_has_no_findings():
    rule = GradientHealthRule(["a", "b"])
    assert rule.evaluate(_summary(["a", "b"], layer_mean_norms=[0.5, 1.0])) == []


@pytest.mark.parametrize(
    ("scaler", "scale", "nonfinite", "expected"),
    [
        (False, None, 1, ("nonfinite_gradients", "critical")),
        (True, 1024.0, 1, ("amp_overflow", "info")),
        (True, 1024.0, 8, ("amp_overflow", "warning")),  # persistent: 80% of the window
        (True, 1e-3, 2, ("amp_overflow", "critical")),  # the scale collapsed
    ],
)
def test_nonfinite_gradients_and_amp(scaler, scale, nonfinite, expected):
    rule = GradientHealthRule(["a"])
    summary = _summary(["a"], nonfinite_grad_steps=nonfinite, first_nonfinite_grad_step=3)
    findings = rule.evaluate(summary, amp_scaler=scaler, amp_scale=scale, first_nonfinite_layer="a")
    assert [(f.kind, f.severity) for f in findings] == [expected]
    assert findings[0].step == 3 and findings[0].layer == "a"


def test_spike_reports_numbers_and_onset():
    rule = GradientHealthRule(["a"])
    summary = _summary(["a"], spike_steps=1, first_spike_step=41, max_spike_ratio=260.0,
                       spike_median=3.1, max_total_norm=812.0)
    (finding,) = rule.evaluate(summary)
    assert finding.kind == "exploding_gradients" and finding.step == 41
    assert "812" in finding.message and "3.1" in finding.message and "Try:" in finding.message


def test_nonfinite_loss_is_critical_with_its_first_step():
    rule = GradientHealthRule(["a"])
    summary = _summary(["a"], nonfinite_loss_steps=2, loss_steps=10, first_nonfinite_loss_step=7)
    assert _kinds(rule, summary) == [("nonfinite_loss", "critical")]


def test_vanishing_needs_patience_and_reports_once():
    rule = GradientHealthRule(["first", "mid", "last"], GradientThresholds(vanishing_patience=2))
    vanishing = _summary(["first", "mid", "last"], layer_mean_norms=[1e-6, 1e-3, 1.0])
    assert _kinds(rule, vanishing) == []
    assert _kinds(rule, vanishing) == [("vanishing_gradients", "warning")]
    assert _kinds(rule, vanishing) == []  # not repeated every window


@pytest.mark.parametrize(
    ("norms", "vanishing"),
    [
        ([1e-6, 1.0], True),
        ([1e-6, 1e-4], False),  # ratio 1e-2: not below 1e-3
        ([1e-3, 10.0], False),  # first not below 1e-4
        ([0.0, 0.2], True),  # no gradient at all reaches the first layer
        ([math.nan, 1e-6, 1.0], True),  # layers without gradients are skipped
    ],
)
def test_vanishing_table(norms, vanishing):
    names = [f"l{i}" for i in range(len(norms))]
    rule = GradientHealthRule(names, GradientThresholds(vanishing_patience=1))
    kinds = [f.kind for f in rule.evaluate(_summary(names, layer_mean_norms=norms))]
    assert (kinds == ["vanishing_gradients"]) == vanishing


def test_layer_growth_against_own_history():
    rule = GradientHealthRule(["a", "b"])
    for _ in range(3):
        assert rule.evaluate(_summary(["a", "b"], layer_mean_norms=[1.0, 1.0])) == []
    (finding,) = rule.evaluate(_summary(["a", "b"], layer_mean_norms=[1.0, 30.0]))
    assert finding.kind == "exploding_gradients" and finding.layer == "b"
    assert finding.evidence["ratio"] == pytest.approx(30.0)


@pytest.mark.parametrize("losses,severity", [((2.0, 1.5), "info"), ((1.5, 1.6), "warning"), ((None, None), "warning")])
def test_layer_growth_while_the_loss_falls_is_only_info(losses, severity):
    rule = GradientHealthRule(["a", "b"])
    loss_fields = lambda mean: {} if mean is None else {"loss_steps": 10, "finite_loss_sum": 10 * mean}  # noqa: E731
    for _ in range(3):
        rule.evaluate(_summary(["a", "b"], layer_mean_norms=[1.0, 1.0], **loss_fields(losses[0])))
    (finding,) = rule.evaluate(_summary(["a", "b"], layer_mean_norms=[1.0, 30.0], **loss_fields(losses[1])))
    assert finding.severity == severity
    if severity == "info":
        assert "kept falling" in finding.message and finding.evidence["loss_now"] == 1.5


def test_state_round_trip():
    rule = GradientHealthRule(["a", "b"], GradientThresholds(vanishing_patience=2))
    rule.evaluate(_summary(["a", "b"], layer_mean_norms=[1e-6, 1.0]))
    other = GradientHealthRule(["a", "b"], GradientThresholds(vanishing_patience=2))
    other.load_state_dict(rule.state_dict())
    assert [f.kind for f in other.evaluate(_summary(["a", "b"], layer_mean_norms=[1e-6, 1.0]))] == [
        "vanishing_gradients"
    ]


values = st.one_of(st.floats(0, 1e30), st.just(math.nan), st.just(math.inf))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(values, min_size=3, max_size=3), min_size=1, max_size=10),
       st.integers(0, 10), st.integers(0, 10), st.booleans())
def test_rule_matches_a_plain_reading_of_any_sequence(windows, nonfinite, spikes, scaler):
    """Over any sequence of windows: non-finite steps give one finding whose kind and severity
    follow the scaler and the share of steps; spikes give one window-level exploding finding
    whose severity grows with their count; vanishing is reported once, the window its streak
    reaches the patience (GradientThresholds' defaults throughout)."""
    rule = GradientHealthRule(["a", "b", "c"])
    streak = 0
    for norms in windows:
        summary = _summary(["a", "b", "c"], layer_mean_norms=norms, nonfinite_grad_steps=nonfinite,
                           spike_steps=spikes, first_spike_step=0 if spikes else None,
                           first_nonfinite_grad_step=0 if nonfinite else None)
        findings = rule.evaluate(summary, amp_scaler=scaler, amp_scale=1.0 if scaler else None)
        by_kind = {}
        for finding in findings:
            if finding.layer is None or finding.kind in ("nonfinite_gradients", "amp_overflow"):
                by_kind.setdefault(finding.kind, []).append(finding.severity)
        if nonfinite == 0:
            assert "nonfinite_gradients" not in by_kind and "amp_overflow" not in by_kind
        elif scaler:  # a scale of 1.0 has not collapsed; more than half the steps is persistent
            assert by_kind.get("amp_overflow") == ["warning" if nonfinite / 10 > 0.5 else "info"]
        else:
            assert by_kind.get("nonfinite_gradients") == ["critical"]
        expected = None if spikes == 0 else "critical" if spikes > 5 else "warning" if spikes >= 2 else "info"
        assert by_kind.get("exploding_gradients") == (None if expected is None else [expected])
        present = [v for v in norms if math.isfinite(v)]
        if len(present) < 2 or present[-1] <= 0:
            streak = 0
        else:
            streak = streak + 1 if present[0] / present[-1] < 1e-3 and present[0] < 1e-4 else 0
        assert [f.kind for f in findings].count("vanishing_gradients") == (streak == 2)


@pytest.mark.parametrize(
    ("spikes", "ratio", "severity"),
    [(1, 13.0, "info"), (2, 13.0, "warning"), (1, 60.0, "warning"), (6, 13.0, "critical")],
)
def test_spike_severity_table(spikes, ratio, severity):
    rule = GradientHealthRule(["a"])
    summary = _summary(["a"], spike_steps=spikes, first_spike_step=3, max_spike_ratio=ratio,
                       spike_median=1.0, max_total_norm=ratio)
    (finding,) = rule.evaluate(summary)
    assert (finding.kind, finding.severity) == ("exploding_gradients", severity)
