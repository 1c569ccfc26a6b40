"""PlateauSchedule makes torch's ReduceLROnPlateau decisions: a differential test, and a table."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.rules.plateau_schedule import PlateauSchedule

metric = st.one_of(st.floats(-10, 10, allow_nan=False), st.sampled_from([math.nan, 1.0, 1.0, 0.5]))


@settings(max_examples=150, deadline=None)
@given(values=st.lists(metric, min_size=1, max_size=60), mode=st.sampled_from(["min", "max"]),
       threshold_mode=st.sampled_from(["rel", "abs"]), factor=st.sampled_from([0.1, 0.5, 0.9]),
       patience=st.integers(0, 4), cooldown=st.integers(0, 3), threshold=st.sampled_from([0.0, 1e-4, 0.1]),
       min_lr=st.sampled_from([0.0, 1e-3, 0.05]), lrs=st.sampled_from([[0.1], [0.1, 0.01]]))
def test_same_reductions_as_torch(values, mode, threshold_mode, factor, patience, cooldown, threshold, min_lr, lrs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])
    kwargs = dict(mode=mode, factor=factor, patience=patience, threshold=threshold,
                  threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=1e-8)
    torch_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    ours = PlateauSchedule(**kwargs)
    current = list(lrs)
    for value in values:
        torch_scheduler.step(value)
        new = ours.step(value, current)
        if new is not None:
            current = new
        assert current == [g["lr"] for g in optimizer.param_groups]
        assert ours.best == torch_scheduler.best or (math.isnan(ours.best) and math.isnan(torch_scheduler.best))
        assert ours.bad_checks == torch_scheduler.num_bad_epochs


def test_table_patience_and_cooldown():
    schedule = PlateauSchedule(patience=2, cooldown=1, factor=0.5)
    lrs, reductions = [1.0], []
    for check, value in enumerate([5, 4, 4, 4, 4, 4, 4, 4, 4, 4]):
        new = schedule.step(value, lrs)
        if new:
            lrs, reductions = new, reductions + [check]
    assert reductions == [4, 8] and lrs == [0.25]


def test_state_round_trip():
    schedule = PlateauSchedule(patience=1)
    schedule.step(1.0, [1.0])
    schedule.step(2.0, [1.0])
    restored = PlateauSchedule(patience=1)
    restored.load_state_dict(schedule.state_dict())
    assert restored.step(2.0, [1.0]) == schedule.step(2.0, [1.0]) == [0.1]


@pytest.mark.parametrize("acting,severity", [(True, "info"), (False, "warning")])
def test_check_reports_a_plateau_when_the_schedule_reduces(acting, severity):
    schedule = PlateauSchedule(patience=1, factor=0.5)
    results = [schedule.check(v, [0.2, 0.02], "`val_loss`", acting) for v in (3.0, 3.0, 3.0)]
    assert [f is None for f, _ in results] == [True, True, False]
    finding, multipliers = results[-1]
    assert finding.kind == "plateau" and finding.severity == severity
    assert finding.evidence == {"value": 3.0, "best": 3.0, "patience": 1, "first": 3.0}
    assert multipliers == pytest.approx([0.5, 0.5])
    assert ("multiplied by 0.5" in finding.observation) == acting


@pytest.mark.parametrize("values,severity", [
    ((2.3, 2.0, 2.0, 2.0), "warning"),  # stuck after little progress: the run is hurt
    ((2.3, 0.5, 0.5, 0.5), "info"),  # most of the progress made: it may have converged
    ((0.1, 0.6, 0.6, 0.6), "warning"),  # mode "min": a metric that got worse made no progress
])
def test_a_plateau_after_most_of_the_progress_is_info(values, severity):
    schedule = PlateauSchedule(patience=1)
    finding = next(f for f, _ in [schedule.check(v, [0.1], "`val_loss`", acting=False) for v in values] if f)
    assert finding.severity == severity and finding.evidence["first"] == values[0]
    assert ("may have converged" in finding.observation) == (severity == "info")


def test_check_holds_without_progress_but_counts_the_checks():
    schedule = PlateauSchedule(patience=0)
    assert schedule.check(3.0, [1.0], "the loss", acting=True) == (None, [])
    assert schedule.check(3.0, [1.0], "the loss", acting=True, hold=True) == (None, [])
    assert schedule.bad_checks == 0  # the reduction was due, and its count reset, though nothing is reported


def test_check_multiplier_is_one_for_a_group_at_its_floor():
    schedule = PlateauSchedule(patience=0, factor=0.5, min_lr=0.1)
    schedule.check(1.0, [1.0, 0.1], "x", acting=True)
    _, multipliers = schedule.check(1.0, [1.0, 0.1], "x", acting=True)
    assert multipliers == pytest.approx([0.5, 1.0])


def test_a_nan_metric_is_not_reported_as_a_plateau_but_counts_as_a_bad_check():
    schedule = PlateauSchedule(patience=1)
    assert schedule.check(1.0, [1.0], "x", acting=True) == (None, [])
    assert schedule.check(math.nan, [1.0], "x", acting=True) == (None, [])
    assert schedule.bad_checks == 1
    assert schedule.check(math.nan, [1.0], "x", acting=True) == (None, [])  # due, but not a plateau


def test_a_plateau_at_the_lr_floor_is_a_warning_that_reduces_nothing():
    schedule = PlateauSchedule(patience=0, min_lr=0.0)
    schedule.check(1.0, [0.0], "x", acting=True)
    finding, multipliers = schedule.check(1.0, [0.0], "x", acting=True)
    assert finding.severity == "warning" and "already at its floor (0)" in finding.observation
    assert multipliers == [1.0] and finding.evidence["lr"] == 0.0
