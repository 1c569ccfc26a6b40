"""The loss-regime rules, fed tables of loss sequences: no Trainer."""

import math
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lightning_convergence.rules.loss_regime import LossRegimeRule, RegimeThresholds
from lightning_convergence.rules.overfit import OverfitRule


def feed(losses, window=20, num_classes=None, **thresholds):
    rule = LossRegimeRule(RegimeThresholds(**thresholds), num_classes=num_classes)
    found = []
    for start in range(0, len(losses), window):
        chunk = losses[start:start + window]
        found += [(f.kind, f.severity, start) for f in rule.evaluate(list(range(start, start + len(chunk))), chunk)]
    return found


def healthy(n=400, seed=0, noise=0.3):
    rng = random.Random(seed)
    return [2.3 * math.exp(-i / 80) + 0.05 + noise * rng.random() * 2.3 * math.exp(-i / 80) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_healthy_noisy_decay_gives_nothing(seed):
    assert feed(healthy(seed=seed), num_classes=10) == []


@pytest.mark.parametrize("seed", range(3))
def test_flat_noisy_loss_from_the_start_is_at_most_no_learning(seed):
    rng = random.Random(seed)
    losses = [0.3 + 0.2 * (rng.random() - 0.5) for _ in range(400)]  # a fine-tuning run that starts low
    assert {k for k, _, _ in feed(losses)} <= {"no_learning"}  # flat from the start: no learning, nothing else


def test_climbing_loss_is_divergence_with_its_onset():
    losses = healthy(200, noise=0.05)[:120] + [0.5 * 1.1 ** i for i in range(80)]
    found = feed(losses)
    assert found and found[0][:2] == ("divergence", "critical")
    rule = LossRegimeRule()
    for start in range(0, 200, 20):
        findings = rule.evaluate(list(range(start, start + 20)), losses[start:start + 20])
        if findings:
            assert 120 <= findings[0].step <= 160 and "climbed from its best" in findings[0].message
            break


def test_a_loss_that_climbs_from_its_start_is_said_to_have_never_improved():
    # Its best is where it started: the message says so once, not as a best and a start.
    rule, found = LossRegimeRule(), []
    losses = [2.0 * 1.08 ** i for i in range(100)]
    for start in range(0, 100, 20):
        found += rule.evaluate(list(range(start, start + 20)), losses[start:start + 20])
    finding = next(f for f in found if f.kind == "divergence")  # (each window says it again)
    assert "climbed from where it started" in finding.message and "without ever improving" in finding.message
    assert "its best" not in finding.message


def test_mostly_nan_window_is_divergence_but_one_nan_batch_is_not():
    losses = healthy(100, noise=0.05)
    assert feed(losses[:60] + [math.nan] + losses[61:]) == []
    found = feed(losses[:60] + [math.nan] * 40)
    assert ("divergence", "critical", 60) in found


def test_square_wave_is_oscillation():
    rng = random.Random(0)
    losses = [1.0 + (0.8 if (i // 10) % 2 else 0.0) + 0.05 * rng.random() for i in range(200)]
    kinds = {k for k, _, _ in feed(losses, no_learning_steps=10_000)}
    assert "oscillation" in kinds


def test_flat_loss_at_chance_is_no_learning_near_chance():
    rng = random.Random(0)
    losses = [math.log(10) + 0.02 * rng.random() for _ in range(300)]
    rule = LossRegimeRule(num_classes=10)
    messages = []
    for start in range(0, 300, 50):
        messages += [f.message for f in rule.evaluate(list(range(start, start + 50)), losses[start:start + 50])
                     if f.kind == "no_learning"]
    assert messages and "chance level for 10 classes" in messages[0]


def test_restart_from_resets_the_smoothed_loss():
    rule = LossRegimeRule(RegimeThresholds(initial_steps=2))
    rule.evaluate(list(range(20)), [2.0 - 0.05 * i for i in range(20)])
    rule.evaluate(list(range(20, 40)), [9.0] * 20)
    rule.restart_from(1.2)
    assert rule.evaluate(list(range(40, 60)), [1.1] * 20) == []


def test_state_round_trip_gives_the_same_decisions():
    losses = healthy(120, noise=0.05) + [0.5 * 1.1 ** i for i in range(80)]
    a = LossRegimeRule()
    a.evaluate(list(range(100)), losses[:100])
    b = LossRegimeRule()
    b.load_state_dict(a.state_dict())
    steps = list(range(100, 200))
    assert [f.kind for f in a.evaluate(steps, losses[100:])] == [f.kind for f in b.evaluate(steps, losses[100:])]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 5)), min_size=0, max_size=120),
       st.integers(1, 50))
@example([math.nan] * 5 + [1.0] * 5, 10)  # exactly at the line: 5 steps, half the window
@example([1.0] * 6 + [math.inf] * 6, 12)
def test_any_sequence_gives_at_most_one_finding_and_nonfinite_windows_diverge(losses, window):
    """Per window: at most one finding (the first regime found wins), never dated after the
    window; a window that is mostly NaN/Inf (at least 5 steps and half of it) is a critical
    divergence dated at its first non-finite step, whatever came before."""
    rule = LossRegimeRule(num_classes=3)
    for start in range(0, len(losses), window):
        chunk = losses[start:start + window]
        steps = list(range(start, start + len(chunk)))
        findings = rule.evaluate(steps, chunk)
        assert len(findings) <= 1
        assert all(f.step is None or f.step <= steps[-1] for f in findings)
        nonfinite = [s for s, v in zip(steps, chunk) if not math.isfinite(v)]
        if len(nonfinite) >= max(0.5 * len(chunk), 5):
            assert [(f.kind, f.severity, f.step) for f in findings] == [("divergence", "critical", nonfinite[0])]
            assert findings[0].evidence["nonfinite_steps"] == len(nonfinite)


@pytest.mark.parametrize("values,train,expected", [
    ([1.0, 0.9, 0.8, 0.7], [1.0, 0.9, 0.8, 0.7], []),
    ([1.0, 0.8, 1.0, 1.1], [1.0, 0.8, 0.6, 0.5], [3]),  # worse by >10% twice while train falls
    ([1.0, 0.8, 1.0, 1.1], [1.0, 0.8, 0.9, 1.0], []),  # train rising too: not overfitting
    ([1.0, 0.8, 0.85, 0.86], [1.0, 0.8, 0.6, 0.5], []),  # within 10% of the best
    ([1.0, 0.8, math.nan, 1.0, 1.1], [1.0, 0.8, 0.7, 0.6, 0.5], [4]),
])
def test_overfit_table(values, train, expected):
    rule = OverfitRule(threshold=0.1, patience=2)
    hits = [step for step, (v, t) in enumerate(zip(values, train)) if rule.update(v, t, step) is not None]
    assert hits == expected


def test_overfit_in_max_mode_and_state():
    rule = OverfitRule(mode="max", threshold=0.05, patience=1)
    assert rule.update(0.9, 1.0, 0) is None
    finding = rule.update(0.7, 0.5, 1)
    assert finding is not None and finding.kind == "overfitting" and "0.9" in finding.message
    restored = OverfitRule(mode="max", threshold=0.05, patience=1)
    restored.load_state_dict(rule.state_dict())
    assert restored.best == 0.9


@pytest.mark.parametrize("kwargs,named", [
    ({"beta": 1.0}, "beta"), ({"chunk": 0}, "chunk"), ({"divergence_rise": math.inf}, "divergence_rise"),
    ({"no_learning_steps": True}, "no_learning_steps"), ({"oscillation_level": -1}, "oscillation_level"),
])
def test_bad_thresholds_raise(kwargs, named):
    # A bool where an int is needed is a wrong type (TypeError); the rest are out of range.
    error = TypeError if isinstance(next(iter(kwargs.values())), bool) else ValueError
    with pytest.raises(error, match=named):
        RegimeThresholds(**kwargs)


def test_a_single_batch_blow_up_then_chance_is_a_collapse_not_no_learning():
    rng = random.Random(0)
    losses = [2.3 + 0.02 * rng.random() for _ in range(14)] + [3.1] + [2.3 + 0.05 * rng.random() for _ in range(185)]
    found = feed(losses, window=50, num_classes=10)
    assert ("divergence", "critical", 150) in found and "no_learning" not in {k for k, _, _ in found}
    rng = random.Random(1)
    flat = [2.3 + 0.05 * (rng.random() - 0.5) for _ in range(200)]  # a too-low LR: no jump
    assert {k for k, _, _ in feed(flat, window=50, num_classes=10)} == {"no_learning"}


def test_a_rollback_returns_to_the_smoothed_loss_of_the_last_mark():
    rule = LossRegimeRule(RegimeThresholds(initial_steps=2))
    rule.evaluate(list(range(20)), [2.0 - 0.05 * i for i in range(20)])
    rule.mark()
    marked = (rule.ema, rule.slow)
    rule.evaluate(list(range(20, 40)), [9.0] * 20)
    assert rule.ema != marked[0]
    rule.restart_from_mark()
    assert (rule.ema, rule.slow) == marked


def test_a_window_with_a_nan_loss_is_not_steady():
    rule = LossRegimeRule(RegimeThresholds(initial_steps=2))
    falling = [2.0 - 0.01 * i for i in range(40)]
    rule.evaluate(list(range(40)), falling)
    assert rule.steady
    rule.evaluate(list(range(40, 60)), [1.5] * 19 + [math.nan])  # one NaN: too few to be divergence
    assert not rule.steady
    rule.evaluate(list(range(60, 80)), [1.5] * 20)
    assert rule.steady


@pytest.mark.parametrize("kwargs,error", [({"num_classes": 1}, ValueError), ({"num_classes": 2.5}, TypeError),
                                          ({"thresholds": {"beta": 0.5}}, TypeError)])
def test_bad_rule_arguments_raise_naming_them(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        LossRegimeRule(**kwargs)


def test_chance_level_is_log_k_and_none_without_classes():
    assert LossRegimeRule().chance_level is None
    assert LossRegimeRule(num_classes=4).chance_level == pytest.approx(math.log(4))
