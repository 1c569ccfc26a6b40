"""The unit-health rule, fed tables of windows: no Trainer."""

import pytest

from lightning_convergence.rules.unit_health import LayerUnits, UnitHealthRule, UnitThresholds


def window(dead=None, units=100, saturation=None, layer="net.1", activation="ReLU", **kwargs):
    return LayerUnits(layer, activation, units, dead=dead, dormant=dead or 0, saturation=saturation,
                      batches=5, first_step=0, last_step=49, **kwargs)


@pytest.mark.parametrize("dead_per_window,expected", [
    ([0, 0, 0], []),
    ([9, 9, 9], []),  # below dead_info
    ([30, 0, 30], []),  # never two windows in a row
    ([30, 30], ["warning"]),
    ([12, 12], ["info"]),
    ([80, 90], ["critical", "critical"]),  # 75% or more: said from the first window (ReDo at once)
    ([74, 0], []),
    ([100], ["critical"]),  # a layer entirely dead: the network's output no longer depends on its input
    ([30, 30, 30], ["warning", "warning"]),  # the log rate-limits repeats, the rule does not
])
def test_dead_units_table(dead_per_window, expected):
    rule = UnitHealthRule()
    severities = []
    for dead in dead_per_window:
        severities += [f.severity for f in rule.evaluate([window(dead)]) if f.kind == "dead_units"]
    assert severities == expected


@pytest.mark.parametrize("saturation,expected", [(0.1, 0), (0.49, 0), (0.5, 1), (0.95, 1)])
def test_saturation_table(saturation, expected):
    rule = UnitHealthRule(UnitThresholds(windows=1))
    findings = rule.evaluate([window(saturation=saturation, activation="Tanh")])
    assert [f.kind for f in findings] == ["saturated_units"] * expected


def test_message_names_layer_numbers_and_negative_biases():
    rule = UnitHealthRule(UnitThresholds(windows=1))
    finding = rule.evaluate([window(40, producer="net.0", dead_bias_mean=-3.0, live_bias_mean=0.05)])[0]
    assert finding.layer == "net.1" and finding.evidence["dead_fraction"] == 0.4
    assert "40 of 100 units (40%)" in finding.message and "`net.0`" in finding.message
    assert "Their incoming biases average -3, against 0.05 for the live units." in finding.message
    assert [c.cause for c in finding.causes][:2] == ["learning_rate_too_high", "bad_initialization"]
    assert finding.causes[0].evidence == {"dead_bias_mean": -3.0, "live_bias_mean": 0.05}
    assert "LeakyReLU" in finding.message and "ReDo" in finding.message


def test_small_negative_biases_are_not_called_the_cause():
    rule = UnitHealthRule(UnitThresholds(windows=1))
    finding = rule.evaluate([window(40, dead_bias_mean=-0.04, live_bias_mean=0.03)])[0]
    assert "Their incoming biases" not in finding.message
    assert all(c.evidence == {} for c in finding.causes)


def test_layers_are_tracked_separately_and_state_round_trips():
    rule = UnitHealthRule()
    rule.evaluate([window(30, layer="a"), window(0, layer="b")])
    restored = UnitHealthRule()
    restored.load_state_dict(rule.state_dict())
    findings = restored.evaluate([window(30, layer="a"), window(30, layer="b")])
    assert [f.layer for f in findings] == ["a"]


def test_activations_that_cannot_die_give_no_dead_finding():
    rule = UnitHealthRule(UnitThresholds(windows=1))
    assert rule.evaluate([window(None, activation="Sigmoid", saturation=0.0)]) == []


@pytest.mark.parametrize("kwargs,named", [
    ({"dead_info": 0.0}, "dead_info"), ({"dead_warning": 1.5}, "dead_warning"),
    ({"dead_info": float("nan")}, "dead_info"), ({"windows": 0}, "windows"),
    ({"dead_info": 0.5, "dead_warning": 0.2}, "dead_info"), ({"saturation_warning": -0.1}, "saturation_warning"),
])
def test_bad_thresholds_raise_naming_the_argument(kwargs, named):
    with pytest.raises(ValueError, match=named):
        UnitThresholds(**kwargs)


def test_a_bool_for_an_int_is_a_type_error():
    with pytest.raises(TypeError, match="windows"):
        UnitThresholds(windows=True)
