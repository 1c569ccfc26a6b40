"""The preflight verdicts, as tables of measured numbers (no Trainer)."""

from __future__ import annotations

import math

import pytest

from lightning_convergence.rules.input_health import PartSummary
from lightning_convergence.rules.preflight import (PreflightEvidence, check_data, check_gradients,
                                                   check_initial_loss, collapse_paths)
from lightning_convergence.rules.preflight_training import (HeldOutRun, OverfitRun, check_learning_rate,
                                                            check_overfit, softmax_floor)


def top_causes(findings):
    return [f.causes[0].cause for f in findings if f.severity != "info"]


@pytest.mark.parametrize("flagged, expected", [
    (["a.0.w", "a.0.b", "a.1.w"], ["a"]),
    (["a.0.w", "a.0.b"], ["a.0"]),
    (["a.1.w", "c"], ["a.1", "c"]),
    ([], []),
])
def test_collapse_paths(flagged, expected):
    assert collapse_paths(flagged, ["a.0.w", "a.0.b", "a.1.w", "b.w", "c"]) == expected


def labels(distinct):
    return PartSummary("batch[1]", False, len(distinct), low=0, high=9, mean_batch_span=1.0, is_target=True)


@pytest.mark.parametrize("distinct, sequential, severity", [
    ([1, 1, 1, 1], True, "warning"),  # sorted by class, read in order
    ([1, 2, 1, 2], False, "info"),  # few labels per batch from a random sampler: imbalance, not order
    ([10, 9, 10, 10], True, None),  # shuffled beforehand, read in order: fine
])
def test_labels_per_batch(distinct, sequential, severity):
    evidence = PreflightEvidence(num_classes=10)
    result, findings = check_data([labels(distinct)], distinct, 32, sequential, evidence)
    found = [f for f in findings if f.kind == "oscillation"]
    assert [f.severity for f in found] == ([severity] if severity else [])
    if severity == "warning":
        assert top_causes(found) == ["unshuffled_data"] and result.passed is False


@pytest.mark.parametrize("rms, warned", [(1e10, True), (30.0, False), (1.0, False)])
def test_regression_target_scale(rms, warned):
    target = PartSummary("batch[1]", True, 4, means=[rms], rms=[rms], is_target=True)
    _, findings = check_data([target], [], 32, False, PreflightEvidence())
    assert top_causes(findings) == (["unnormalized_targets"] if warned else [])


@pytest.mark.parametrize("loss, k, passed, kinds", [
    (2.31, 10, True, []),
    (2.31 * 3, 10, False, ["poor_initialization"]),  # info: the overfit says whether it stops training
    (math.inf, 10, False, ["nonfinite_loss"]),
    (5.0, None, True, []),  # no class count: not compared
])
def test_initial_loss(loss, k, passed, kinds):
    result, findings = check_initial_loss(loss, PreflightEvidence(num_classes=k))
    assert result.passed is passed and [f.kind for f in findings] == kinds


NAMES = ["encoder.0.weight", "encoder.0.bias", "head.weight", "head.bias"]


@pytest.mark.parametrize("missing, zero, nonfinite, stale, causes", [
    ([], [], [], None, []),
    (["encoder.0.weight", "encoder.0.bias"], [], [], None, ["gradient_flow_cut"]),
    ([], ["head.bias"], [], None, ["dead_relu_units"]),  # exactly zero: usually a layer of dead ReLUs
    ([], [], ["head.weight"], None, ["non_differentiable_operation"]),
    ([], [], [], 0.95, ["stale_gradients"]),
    ([], [], [], 0.1, []),  # a few parameters reused across steps on purpose
])
def test_gradients(missing, zero, nonfinite, stale, causes):
    evidence = PreflightEvidence()
    result, findings = check_gradients(NAMES, missing, zero, nonfinite, [], True, stale, [1.0, 2.0, 3.0], evidence)
    assert top_causes(findings) == causes and result.passed is (not causes)
    if missing:
        assert evidence.no_gradient == ["encoder"]


def run(multiplier, start, end, steps=40):
    return OverfitRun(multiplier, tuple(start + (end - start) * k / (steps - 1) for k in range(steps)))


@pytest.mark.parametrize("runs, evidence, causes", [
    ([run(1.0, 2.3, 0.2)], PreflightEvidence(), []),  # memorised at the configured rate
    ([run(1.0, 2.3, 2.2), run(0.1, 2.3, 0.3)], PreflightEvidence(), ["learning_rate_too_high"]),
    ([run(1.0, 2.3, 2.28), run(0.1, 2.3, 2.3), run(10.0, 2.3, 0.2)], PreflightEvidence(), ["learning_rate_too_low"]),
    ([run(1.0, 2.3, 1.0), run(0.1, 2.3, 2.0), run(10.0, 2.3, 0.2)], PreflightEvidence(), []),  # slow, not stuck
    ([run(m, 2.3, 2.2) for m in (1, 0.1, 10, 0.01, 100)], PreflightEvidence(softmax_rows=True, num_classes=10),
     ["wrong_loss_for_task"]),
    ([run(m, 2.3, 2.0) for m in (1, 0.1, 10, 0.01, 100)], PreflightEvidence(stale_share=1.0), ["stale_gradients"]),
    # nothing measured names a cause: info only (converged SGD transformers of the sweep memorise slowly)
    ([run(m, 2.3, 1.2) for m in (1, 0.1, 10, 0.01, 100)], PreflightEvidence(), []),
    ([run(1, 2.3, 2.25), run(0.1, 2.3, 2.29), run(10, 2.3, 2.0), run(0.01, 2.3, 2.3), run(100, 2.3, 1.5)],
     PreflightEvidence(), ["learning_rate_too_low"]),  # the higher the rate, the more it fell
    ([run(m, 2.3, 2.2) for m in (1, 0.1, 10, 0.01, 100)], PreflightEvidence(grad_ratio=1e-5, saturating=True),
     ["saturating_activations"]),  # gradients vanish before the first layer of a sigmoid stack
    ([run(m, 2.3, 2.2) for m in (1, 0.1, 10, 0.01, 100)], PreflightEvidence(zero_gradient=["net.0"]),
     ["dead_relu_units"]),
])
def test_overfit_ladder(runs, evidence, causes):
    result, findings = check_overfit(runs, None, evidence)
    assert top_causes(findings) == causes and result.passed is (not causes)


def test_a_ladder_cut_short_by_the_clock_is_inconclusive():
    result, findings = check_overfit([run(1.0, 2.3, 2.2)], None, PreflightEvidence(), complete=False)
    assert result.passed is None and findings == []


@pytest.mark.parametrize("held, evidence, causes", [
    ((2.3, 2.31, 2.35, 2.4), PreflightEvidence(), ["labels_mismatched"]),
    ((2.3, 2.2, 1.5, 0.9), PreflightEvidence(), []),
    # identical hidden units (a constant init) learn slowly and carry little, whatever the labels
    ((2.3, 2.31, 2.35, 2.4), PreflightEvidence(bad_init=["net.0"]), ["bad_initialization"]),
])
def test_memorised_but_nothing_carries(held, evidence, causes):
    _, findings = check_overfit([run(1.0, 2.3, 0.2)], HeldOutRun(1.0, held), evidence)
    assert top_causes(findings) == causes


@pytest.mark.parametrize("pick, diverged_at, curve, causes", [
    (0.03, 0.6, [2.3, 2.3, 2.2, 2.1, 9.0], ["learning_rate_too_high"]),  # diverged below the configured rate
    (0.03, 30.0, [2.3, 2.2, 2.1, 2.4, 3.0, 9.0, 30.0], ["learning_rate_too_high"]),  # only rose from 1x on
    (0.5, 30.0, [2.3, 2.2, 2.0, 1.8, 1.7, 2.5, 30.0], []),
    (300.0, None, [2.3, 2.3, 2.3, 2.3, 2.2, 2.0, 1.5], ["learning_rate_too_low"]),
    (None, None, [2.3] * 7, []),
])
def test_learning_rate_against_the_range_test(pick, diverged_at, curve, causes):
    lrs = [10.0 ** (k - 3) for k in range(len(curve))]  # 1e-3 ... ; 1x is the 4th point
    result, findings = check_learning_rate(pick, diverged_at, lrs, curve)
    assert top_causes(findings) == causes
    assert result.passed is (None if pick is None else not causes)


def test_softmax_floor_is_what_probabilities_fed_to_cross_entropy_reach():
    assert softmax_floor(10) == pytest.approx(math.log(1 + 9 / math.e))
