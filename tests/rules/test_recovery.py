"""RecoveryPolicy: tables of judged windows and the actions they give, no Trainer."""

import math

import pytest

from lightning_convergence.rules.recovery import RecoveryPolicy

# Each row: the policy's settings, then a sequence of (kinds found, steady, step) windows and the
# (kind, reason) actions expected after each.
TABLE = [
    ("a steady run snapshots every steady window", {},
     [([], True, 50, [("snapshot", "")]), ([], True, 100, [("snapshot", "")])]),
    ("snapshots at most every n steps", {"snapshot_every_n_steps": 120},
     [([], True, 50, []), ([], True, 100, []), ([], True, 150, [("snapshot", "")])]),
    ("divergence cuts the LR and rolls back", {},
     [(["divergence"], False, 50, [("lr_scale", "divergence"), ("rollback", "divergence")])]),
    ("no rollback when asked not to", {"rollback": False},
     [(["divergence"], False, 50, [("lr_scale", "divergence")]), ([], True, 100, [])]),
    ("oscillation only cuts the LR", {},
     [(["oscillation"], False, 50, [("lr_scale", "oscillation")])]),
    ("a steady window after a rollback resets the failures", {"max_recoveries": 2},
     [(["divergence"], False, 50, [("lr_scale", "divergence"), ("rollback", "divergence")]),
      ([], True, 100, [("snapshot", "")]),
      (["divergence"], False, 150, [("lr_scale", "divergence"), ("rollback", "divergence")]),
      (["divergence"], False, 200, [("lr_scale", "divergence"), ("rollback", "divergence")]),
      (["divergence"], False, 250, [("lr_scale", "divergence"), ("stop", "divergence")])]),
    ("no learning raises the LR once, only when asked", {"raise_lr_on_no_learning": True},
     [(["no_learning"], True, 50, [("snapshot", ""), ("lr_scale", "no_learning")]),
      (["no_learning"], True, 100, [("snapshot", "")])]),
    ("no learning is only reported by default", {},
     [(["no_learning"], False, 50, [])]),
]


@pytest.mark.parametrize("name,settings,windows", TABLE, ids=[row[0] for row in TABLE])
def test_actions_follow_the_table(name, settings, windows):
    policy = RecoveryPolicy(**settings)
    assert [a.kind for a in policy.start(step=0)] == (["snapshot"] if settings.get("rollback", True) else [])
    for kinds, steady, step, expected in windows:
        actions = policy.on_window(kinds, steady, step)
        assert [(a.kind, a.reason) for a in actions] == expected, (name, step)


def test_the_stop_says_why_with_the_count():
    policy = RecoveryPolicy(max_recoveries=1)
    policy.start(step=0)
    policy.on_window(["divergence"], steady=False, step=50)
    stop = policy.on_window(["divergence"], steady=False, step=100)[-1]
    assert stop.kind == "stop" and stop.detail == {"failed_recoveries": 1}
    assert stop.finding.kind == "divergence" and stop.finding.severity == "critical"
    assert "after 1 rollbacks" in stop.finding.observation and "step 100" in stop.finding.observation


def test_a_rewarmup_ramps_the_lr_from_the_rollback_and_ends():
    policy = RecoveryPolicy(rewarmup_steps=10)
    policy.start(step=0)
    assert policy.rewarmup_factor(40) == 1.0  # no rollback yet
    policy.on_window(["divergence"], steady=False, step=50)
    factors = [policy.rewarmup_factor(step) for step in range(50, 62)]
    assert factors[0] < factors[5] < factors[9] <= 1.0
    assert all(0 < f <= 1 for f in factors)
    policy.on_window([], steady=True, step=60)  # steady after the ramp: it is over
    assert policy.rewarmup_factor(61) == 1.0


@pytest.mark.parametrize("stop_on_overfit,expected", [(False, []), (True, [("stop", "overfitting")])])
def test_overfitting_stops_only_when_asked(stop_on_overfit, expected):
    policy = RecoveryPolicy(stop_on_overfit=stop_on_overfit)
    assert [(a.kind, a.reason) for a in policy.on_validation(["overfitting"])] == expected
    assert policy.on_validation(["plateau"]) == []


def test_state_round_trip_keeps_the_counters_but_not_the_snapshot():
    policy = RecoveryPolicy(max_recoveries=3, raise_lr_on_no_learning=True)
    policy.start(step=0)
    policy.on_window(["divergence"], steady=False, step=50)
    policy.on_window(["divergence", "no_learning"], steady=False, step=100)
    restored = RecoveryPolicy(max_recoveries=3, raise_lr_on_no_learning=True)
    restored.load_state_dict(policy.state_dict())
    assert (restored.failed_recoveries, restored.rollback_step, restored.raised_lr) == (1, 100, True)
    assert restored.snapshot_step is None  # snapshots live in host memory only


@pytest.mark.parametrize("kwargs,error,named", [
    ({"divergence_factor": 1.0}, ValueError, "divergence_factor"), ({"max_recoveries": 0}, ValueError, "max_recoveries"),
    ({"rewarmup_steps": -1}, ValueError, "rewarmup_steps"), ({"rollback": 1}, TypeError, "rollback"),
    ({"stop_on_overfit": "yes"}, TypeError, "stop_on_overfit"),
])
def test_bad_settings_raise_naming_the_argument(kwargs, error, named):
    with pytest.raises(error, match=named):
        RecoveryPolicy(**kwargs)


@pytest.mark.parametrize("losses, snapshots", [
    ([2.0, 1.95, 1.9, 1.8], [50, 200]),  # 1.8 is more than 5% below 2.0; 1.95 and 1.9 are not
    ([2.0, 1.5, 1.0, 0.9], [50, 100, 150, 200]),  # every window makes progress: every one is new
    ([2.0, 2.0, 2.0, 2.0], [50]),  # no progress: the first snapshot is as good as any
    ([2.0, 2.2, 1.9, 1.85], [50, 200]),  # a worse window never replaces a better snapshot
])
def test_a_snapshot_is_replaced_only_when_the_loss_fell_since(losses, snapshots):
    policy = RecoveryPolicy()
    policy.start(step=0)
    taken = [step for step, loss in zip((50, 100, 150, 200), losses)
             if [a.kind for a in policy.on_window([], True, step, loss=loss)] == ["snapshot"]]
    assert taken == snapshots


def _rollback_target(policy, start_loss, losses, cut_at):
    """Windows at steps 50, 100, 150 with ``losses`` after a start at ``start_loss``; the step a
    cut at ``cut_at`` would roll back to (``None``: no rollback)."""
    policy.start(step=0)
    for step, loss in zip((50, 100, 150), losses):
        policy.credit_start(start_loss)
        policy.on_window([], True, step, loss=loss)
    action = policy.rollback_before_cut(cut_at, losses[-1])
    if action is not None:
        assert (action.kind, action.reason) == ("rollback", "learning_rate_too_high")
    return action.detail["to_step"] if action else None


@pytest.mark.parametrize("start_loss, losses, rollback_to", [
    (2.3, [2.31, 2.30, 2.29], 0),  # never below the start: the first weights are kept, and returned to
    (2.3, [2.0, 2.05, 2.04], 50),  # fell 13% by step 50: that window's snapshot, no worse since
    (2.3, [2.0, 1.5, 1.2], None),  # the snapshot was taken at this very window: nothing to return to
    (None, [2.31, 2.30, 2.29], 50),  # no start loss known: the first steady window replaced step 0's
])
def test_the_start_snapshot_is_credited_with_the_start_loss_and_a_cut_rolls_back_to_it(start_loss, losses,
                                                                                       rollback_to):
    assert _rollback_target(RecoveryPolicy(), start_loss, losses, cut_at=150) == rollback_to


def test_no_rollback_before_a_cut_when_rollbacks_are_off():
    policy = RecoveryPolicy(rollback=False)
    policy.start(step=0)
    policy.credit_start(2.3)
    assert policy.rollback_before_cut(50, 2.4) is None


@pytest.mark.parametrize("start_loss, losses, rollback_to", [
    # A classifier of 10 classes (chance log 10 = 2.303) that started worse, at 2.98, and collapsed
    # to chance: the fall is no progress, so the first weights stay the state to return to.
    (2.98, [2.33, 2.31, 2.25], 0),
    (2.98, [2.33, 2.15, 2.16], 100),  # 5% below chance by step 100: that window's snapshot
    # One that started at chance learns as soon as it is 5% below its start (and chance).
    (2.29, [2.17, 2.16, 2.17], 50),
    (2.29, [2.20, 2.19, 2.20], 0),  # ... and not before
])
def test_a_collapse_to_chance_is_not_progress(start_loss, losses, rollback_to):
    policy = RecoveryPolicy()
    policy.chance_level = math.log(10)
    assert _rollback_target(policy, start_loss, losses, cut_at=200) == rollback_to


def test_without_a_chance_level_the_same_fall_counts_as_progress():
    # A regression, or classes unknown (chance_level is None): 2.33 is 22% below the start, so
    # step 50's window replaced the first weights, as before.
    assert _rollback_target(RecoveryPolicy(), 2.98, [2.33, 2.31, 2.32], cut_at=200) == 50
