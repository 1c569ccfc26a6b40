"""OverfitRule: the validation metric leaving its best while the training loss keeps falling."""

import pytest

from lightning_convergence.rules.overfit import OverfitRule

# validation values, training losses (smoothed to each check), the start of the training loss,
# and the severity of the finding (None: no finding)
TABLE = [
    ((1.0, 1.2, 1.3), (1.0, 0.8, 0.6), None, "warning"),  # 30% worse, training falling
    ((1.0, 1.15, 1.2), (1.0, 0.8, 0.6), None, "info"),  # 20% worse: within what validation moves by
    ((1.0, 1.05, 1.08), (1.0, 0.8, 0.6), None, None),  # under the 10% threshold
    ((1.0, 1.2, 1.3), (1.0, 1.1, 1.2), None, None),  # training loss not falling
    # a training loss that falls from far above its start is a run coming back from divergence
    ((80.0, 120.0, 134.0), (2e9, 1e9, 7e7), 2.3, None),
    ((80.0, 120.0, 134.0), (2e9, 1e9, 7e7), None, "warning"),  # (without the start it cannot tell)
]


@pytest.mark.parametrize("values,train,start,severity", TABLE)
def test_overfitting_needs_a_training_loss_that_falls_below_its_start(values, train, start, severity):
    rule = OverfitRule(patience=2)
    findings = [rule.update(v, t, step, start) for step, (v, t) in enumerate(zip(values, train))]
    assert findings[:-1] == [None] * (len(values) - 1)
    assert (findings[-1].severity if findings[-1] else None) == severity
    if findings[-1]:
        assert findings[-1].evidence["rise"] == pytest.approx((values[-1] - values[0]) / values[0])


def test_in_mode_max_a_falling_metric_is_the_worse_one():
    rule = OverfitRule(mode="max", patience=1)
    assert rule.update(0.9, 1.0, 0) is None
    assert rule.update(0.6, 0.5, 1).severity == "warning"  # 33% below the best accuracy
