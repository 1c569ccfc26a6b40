"""The shared argument checks, and every ``*Thresholds`` refusing values that would make its rule
misfire (``vanishing_patience=0`` reported vanishing gradients on a healthy window)."""

import math

import pytest

from lightning_convergence.rules.wall_time import SpeedThresholds
from lightning_convergence.rules.gradient_health import GradientThresholds
from lightning_convergence.rules.input_health import InputThresholds
from lightning_convergence.rules.loss_regime import RegimeThresholds
from lightning_convergence.rules.unit_health import UnitThresholds
from lightning_convergence.validation import (
    check_bool,
    check_fraction,
    check_nonnegative_float,
    check_nonnegative_int,
    check_open_fraction,
    check_positive_float,
    check_positive_int,
)

CHECKS = [
    # check, bad value, exception, message fragment
    (check_positive_int, 0, ValueError, "an int >= 1, got 0"),
    (check_positive_int, True, TypeError, "an int, got True"),
    (check_positive_int, 2.0, TypeError, "an int, got 2.0"),
    (check_nonnegative_int, -1, ValueError, "an int >= 0, got -1"),
    (check_positive_float, math.nan, ValueError, "> 0.0, got nan"),
    (check_positive_float, math.inf, ValueError, "> 0.0, got inf"),
    (check_positive_float, "1", TypeError, "a number, got '1'"),
    (check_nonnegative_float, -0.5, ValueError, ">= 0, got -0.5"),
    (check_open_fraction, 1.0, ValueError, "in (0, 1), got 1.0"),
    (check_fraction, math.nan, ValueError, "in (0, 1], got nan"),
    (check_bool, 1, TypeError, "a bool, got 1"),
]


@pytest.mark.parametrize(("check", "value", "error", "fragment"), CHECKS)
def test_each_check_names_the_argument_and_the_value(check, value, error, fragment):
    with pytest.raises(error) as raised:
        check("arg", value)
    assert str(raised.value).startswith("`arg` must be") and fragment in str(raised.value)


@pytest.mark.parametrize("check", [c for c, *_ in CHECKS])
def test_good_values_pass(check):
    good = {check_bool: True, check_open_fraction: 0.5, check_fraction: 1.0}.get(check, 3)
    check("arg", good)


THRESHOLDS = [
    (GradientThresholds, "vanishing_patience", 0),
    (GradientThresholds, "vanishing_ratio", math.nan),
    (GradientThresholds, "layer_growth", 0.5),
    (GradientThresholds, "spike_warning_steps", 1.5),
    (GradientThresholds, "amp_persistent_fraction", 1.0),
    (RegimeThresholds, "beta", 1.0),
    (RegimeThresholds, "no_learning_steps", 0),
    (UnitThresholds, "dead_warning", 1.5),
    (InputThresholds, "scale_high", -1.0),
    (SpeedThresholds, "min_fetch_ms", math.inf),
]


@pytest.mark.parametrize(("cls", "name", "value"), THRESHOLDS)
def test_every_thresholds_class_refuses_a_bad_value_by_name(cls, name, value):
    with pytest.raises((ValueError, TypeError), match=f"`{name}`"):
        cls(**{name: value})
