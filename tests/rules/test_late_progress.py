"""LateProgressRule: a run that ended while its loss was still falling steadily, its weights barely moving."""

import pytest

from lightning_convergence.rules.late_progress import LateProgressRule

STEADY = [2.3 - 0.1 * i for i in range(10)]  # the same pace all along
SETTLED = [2.3, 0.9, 0.5, 0.3, 0.25, 0.22, 0.2, 0.2, 0.19, 0.19]
FLAT = [2.30, 2.30, 2.29, 2.29, 2.29, 2.28, 2.28, 2.28, 2.28, 2.28]

# smoothed losses at the windows, the update ratio at each, and whether it is said
TABLE = [
    (STEADY, 4e-4, True),
    (STEADY, 5e-3, False),  # the weights move as in runs that converge: a short run, not a slow one
    (STEADY, None, False),  # no ratios measured: nothing to tell a slow run from a short one
    (SETTLED, 4e-4, False),  # most of the progress came early
    (FLAT, 4e-4, False),  # no progress at all: that is no_learning, said by the loss regime
    (STEADY[:3], 4e-4, False),  # too few windows
]


@pytest.mark.parametrize("emas,ratio,said", TABLE)
def test_a_run_still_falling_steadily_with_small_updates_is_slow_training(emas, ratio, said):
    rule = LateProgressRule()
    for step, ema in zip(range(9, 200, 20), emas):
        rule.observe(step, ema, ratio)
    finding = rule.judge(start=emas[0])
    assert (finding is not None) == said
    if said:
        assert (finding.kind, finding.severity, finding.causes[0].cause) == (
            "slow_training", "warning", "learning_rate_too_low")
        assert finding.evidence["update_ratio_median"] == ratio and 0.3 <= finding.evidence["late_share"] <= 1


def test_its_state_survives_a_checkpoint():
    rule = LateProgressRule()
    for step, ema in zip(range(9, 100, 20), STEADY):
        rule.observe(step, ema, 4e-4)
    restored = LateProgressRule()
    restored.load_state_dict(rule.state_dict())
    for step, ema in zip(range(109, 200, 20), STEADY[5:]):
        rule.observe(step, ema, 4e-4)
        restored.observe(step, ema, 4e-4)
    assert restored.judge(2.3).evidence == rule.judge(2.3).evidence
