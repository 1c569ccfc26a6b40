"""Input, initialisation and data-wait rules, fed tables: no Trainer."""

import math

import pytest
import torch
from torch import nn

from lightning_convergence.rules.init_audit import audit_weight, expected_std
from lightning_convergence.rules.input_health import InputHealthRule, InputThresholds, PartSummary


def part(means, rms, **kwargs):
    return PartSummary("batch[0]", True, 3, means=means, rms=rms, **kwargs)


@pytest.mark.parametrize("means,rms,expected", [
    ([0.3, 0.2], [0.5, 0.4], []),  # [0, 1] pixels
    ([0.0, 0.1], [1.0, 1.1], []),  # standardised
    ([110.0], [130.0], ["unnormalized_inputs"]),  # raw 0-255 pixels
    ([4.9, 0.0], [7.7, 0.0], ["unnormalized_inputs"]),  # raw 0-16 digits
    ([100.0], [100.001], ["unnormalized_inputs"]),  # offset, tiny spread
    ([2.0], [2.05], ["unnormalized_inputs"]),  # offset: mean 2, std 0.45
    ([0.5], [0.6], []),
    ([math.nan], [math.nan], []),  # NaN channels are the NaN check's business
])
def test_scale_table(means, rms, expected):
    assert [f.kind for f in InputHealthRule().evaluate([part(means, rms)])] == expected


def test_pixels_message_and_nonfinite_with_first_step():
    finding = InputHealthRule().evaluate([part([110.0], [130.0])])[0]
    assert "raw 0-255 pixel" in finding.message and finding.layer == "batch[0]"
    finding = InputHealthRule().evaluate([part([0.3], [0.5], nonfinite=12, first_nonfinite_step=41)])[0]
    assert finding.kind == "nonfinite_inputs" and finding.step == 41 and "first at step 41" in finding.message


@pytest.mark.parametrize("low,high,classes,bad", [
    (0, 9, 10, False), (0, 10, 10, True), (-1, 5, 10, True), (-100, 9, 10, False), (1, 10, None, False),
])
def test_label_range_table(low, high, classes, bad):
    labels = PartSummary("batch[1]", False, 3, low=low, high=high, is_target=True)
    findings = InputHealthRule(num_classes=classes).evaluate([labels])
    assert bool(findings) == bad
    if bad:
        assert findings[0].evidence["problem"] == "labels_out_of_range" and findings[0].severity == "critical"


def test_default_and_he_init_pass_and_bad_ones_are_found():
    torch.manual_seed(0)
    assert audit_weight("a", nn.Linear(256, 128).weight, "ReLU") is None
    assert audit_weight("a", nn.Conv2d(16, 32, 3).weight, "ReLU") is None
    assert audit_weight("a", nn.init.kaiming_normal_(torch.empty(128, 256)), "ReLU") is None
    assert audit_weight("a", nn.init.xavier_normal_(torch.empty(128, 256)), "Tanh") is None
    assert audit_weight("a", torch.zeros(8, 4), None).evidence["problem"] == "all_zero"
    assert audit_weight("a", torch.full((8, 4), 0.3), None).evidence["problem"] == "identical_rows"
    assert audit_weight("a", torch.randn(128, 256) * 5, "ReLU").evidence["problem"] == "scale_too_large"
    assert audit_weight("a", torch.randn(128, 256) * 1e-4, "ReLU").evidence["problem"] == "scale_too_small"
    assert audit_weight("a", torch.full((1, 4), 0.3), None) is None  # one unit: nothing to be symmetric with
    assert audit_weight("a", torch.tensor([[math.nan, 1.0]]), None).severity == "critical"
    assert expected_std(100, 100, None)[1] == "Xavier"


@pytest.mark.parametrize("cls,kwargs,named", [
    (InputThresholds, {"scale_high": 0}, "scale_high"), (InputThresholds, {"offset_ratio": math.nan}, "offset_ratio"),
])
def test_bad_thresholds(cls, kwargs, named):
    with pytest.raises(ValueError, match=named):
        cls(**kwargs)
