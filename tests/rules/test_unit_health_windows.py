"""The unit-health rule over per-unit windows (`UnitHealthRule.judge`), fed tables: no Trainer.

Windows end every 10 steps (last steps 9, 19, 29, ...). A site of 4 units by default; a dead unit
gave nothing (peak and |x| sum 0), a live one 1.0 per unit.
"""

import math

import pytest

from lightning_convergence.rules.unit_health import SiteWindow, UnitHealthRule, UnitThresholds


def site(dead=(), units=4, layer="net.1", kind="nonnegative", producer="net.0", abs_sum=None, **kwargs):
    sums = abs_sum or [0.0 if u in dead else 1.0 for u in range(units)]
    peak = [0.0 if u in dead else 1.0 for u in range(units)]
    return SiteWindow(layer, "ReLU", kind, peak, sums, [0.0] * units, 0.0, 2, producer=producer, **kwargs)


def run(rule, windows, act=True):
    """Judge each window (a list of sites); per window, the confirmed dead count per layer and
    the revivals."""
    out = []
    for i, sites in enumerate(windows):
        verdict = rule.judge(sites, last_step=10 * i + 9, act=act)
        out.append(({layer.layer: layer.dead for layer in verdict.layers}, verdict.revive))
    return out


@pytest.mark.parametrize("dead_per_window,confirmed", [
    ([{0, 1}, {0, 1}, {0, 1}], [2, 2, 2]),  # the first window has no window before it: taken as it is
    ([{0, 1}, {2, 3}, {2, 3}], [2, 0, 2]),  # the same units must be silent in both windows
    ([{0, 1, 2}, {1, 2, 3}], [3, 2]),  # only the units silent in both count
    ([set(), {0}, set()], [0, 0, 0]),
])
def test_dead_units_are_those_silent_in_this_window_and_the_one_before(dead_per_window, confirmed):
    rule = UnitHealthRule()
    result = run(rule, [[site(dead)] for dead in dead_per_window], act=False)
    assert [dead["net.1"] for dead, _ in result] == confirmed


def test_confirmed_windows_span_both_windows_and_the_log_counts_this_one_alone():
    rule = UnitHealthRule()
    rule.judge([site({0})], last_step=9)
    layer = rule.judge([site({1, 2})], last_step=19).layers[0]
    assert (layer.dead, layer.window_dead, layer.window_dead_fraction) == (0, 2, 0.5)
    assert (layer.first_step, layer.last_step, layer.batches) == (0, 19, 4)  # two windows of 2 batches
    layer = rule.judge([site({1, 2})], last_step=29).layers[0]
    assert (layer.dead, layer.first_step, layer.batches) == (2, 10, 4)


def test_a_changed_unit_count_starts_afresh():
    rule = UnitHealthRule()
    rule.judge([site({0}, units=4)], last_step=9)
    layer = rule.judge([site({0}, units=6)], last_step=19).layers[0]
    assert (layer.dead, layer.first_step, layer.batches) == (1, 10, 2)


@pytest.mark.parametrize("cooldown,revived_at", [
    # Dead in every window; a revival forgets the units, so they must be silent in two more
    # windows (and the finding hold two windows) before the next: every 3 windows at best.
    (1, [19, 49, 79]),
    (30, [19, 49, 79]),
    (40, [19, 59, 99]),
    (1000, [19]),
])
def test_cooldown_spaces_the_revivals_of_a_layer(cooldown, revived_at):
    rule = UnitHealthRule(redo_cooldown_steps=cooldown)
    result = run(rule, [[site({0, 1})] for _ in range(10)])
    assert [10 * i + 9 for i, (_, revive) in enumerate(result) if revive] == revived_at
    assert all(revive in ({}, {"net.1": [0, 1]}) for _, revive in result)


def test_the_cooldown_is_per_layer():
    rule = UnitHealthRule(redo_cooldown_steps=1000)
    windows = [[site({0, 1}, layer="a"), site(set() if i < 2 else {2, 3}, layer="b")] for i in range(6)]
    revivals = [revive for _, revive in run(rule, windows)]
    # b's units die at step 20: confirmed from the window ending at 39, reported from 49 on.
    assert revivals == [{}, {"a": [0, 1]}, {}, {}, {"b": [2, 3]}, {}]
    assert rule.last_revival == {"a": 19, "b": 49}


def test_revived_units_are_forgotten_but_the_others_are_not():
    rule = UnitHealthRule()
    # Units 0-1 are dead throughout and revived at 19. Unit 2 falls silent in the window ending
    # at 19: not yet confirmed, so not revived, and still held against the next window.
    windows = [[site({0, 1})], [site({0, 1, 2})], [site({0, 1, 2})], [site({0, 1, 2})]]
    result = run(rule, windows)
    assert result[1][1] == {"net.1": [0, 1]}
    assert [dead["net.1"] for dead, _ in result] == [2, 2, 1, 3]
    assert rule.previous_dead == {"net.1": [True, True, True, False]}


def test_info_level_dead_units_are_left_alone():
    rule = UnitHealthRule(UnitThresholds(dead_info=0.1, dead_warning=0.5))
    result = run(rule, [[site({0}, units=8)] for _ in range(4)])
    assert all(revive == {} for _, revive in result)


@pytest.mark.parametrize("act,producer,revive,blocked", [
    (True, "net.0", {"net.1": [0, 1]}, {}),
    (True, None, {}, {"net.1": [0, 1]}),  # wiring unknown: said, not done, no cooldown started
    (False, "net.0", {}, {}),  # observing only
])
def test_revivals_need_acting_and_a_known_producer(act, producer, revive, blocked):
    rule = UnitHealthRule()
    rule.judge([site({0, 1}, producer=producer)], last_step=9, act=act)
    verdict = rule.judge([site({0, 1}, producer=producer)], last_step=19, act=act)
    assert (verdict.revive, verdict.blocked) == (revive, blocked)
    assert rule.last_revival == ({"net.1": 19} if revive else {})


@pytest.mark.parametrize("sums,kind,revive", [
    ([1.0, 1.0, 1.0, 0.05], "nonnegative", {"net.1": [3]}),  # dormant, not dead: revived at once
    ([1.0, 1.0, 1.0, 0.05], "sigmoid", {"net.1": [3]}),  # any activation can be dormant
    ([1.0, 1.0, 1.0, 0.5], "nonnegative", {}),
    ([0.0, 0.0, 0.0, 0.0], "nonnegative", {"net.1": [0, 1, 2, 3]}),  # a silent layer is all dormant
    ([1.0, 1.0, 1.0, math.nan], "nonnegative", {}),  # NaN says nothing about dormancy
])
def test_dormant_mode_revives_dormant_units_of_any_layer(sums, kind, revive):
    rule = UnitHealthRule(redo_on="dormant", dormant_tau=0.1)
    verdict = rule.judge([site(abs_sum=sums, kind=kind)], last_step=9, act=True)
    assert verdict.revive == revive and verdict.findings == []


def test_saturation_bias_and_skip_evidence_reach_the_layer():
    rule = UnitHealthRule(UnitThresholds(windows=1))
    tanh = SiteWindow("t", "Tanh", "tanh", [math.inf] * 2, [2.0, 2.0], [6.0, 2.0], 4.0, 2)
    relu = site({0, 1}, bias=[-3.0, -5.0, 0.1, 0.3])
    skipped = site({0}, layer="s", producer=None, redo_skipped="a second reader")
    layers = rule.judge([tanh, relu, skipped], last_step=9).layers
    assert (layers[0].saturation, layers[0].dead, layers[0].window_dead_fraction) == (1.0, None, None)
    assert (layers[1].dead_bias_mean, layers[1].live_bias_mean) == (-4.0, pytest.approx(0.2))
    assert layers[1].producer == "net.0" and layers[2].evidence == {"redo_skipped": "a second reader"}


def test_a_nan_peak_is_not_dead():
    rule = UnitHealthRule()
    nan = SiteWindow("n", "ReLU", "nonnegative", [math.nan, 0.0], [math.nan, 0.0], [0.0] * 2, 0.0, 2)
    layer = rule.judge([nan], last_step=9).layers[0]
    assert layer.window_dead == 1


def test_state_round_trip_resumes_the_same_decisions():
    windows = [[site({0, 1}, layer="a"), site({0} if i % 2 else {1, 2}, layer="b")] for i in range(8)]
    whole = UnitHealthRule(redo_cooldown_steps=25)
    expected = run(whole, windows)
    first = UnitHealthRule(redo_cooldown_steps=25)
    head = run(first, windows[:3])
    resumed = UnitHealthRule(redo_cooldown_steps=25)
    resumed.load_state_dict(first.state_dict())
    tail = []
    for i, sites in enumerate(windows[3:], start=3):
        verdict = resumed.judge(sites, last_step=10 * i + 9, act=True)
        tail.append(({layer.layer: layer.dead for layer in verdict.layers}, verdict.revive))
    assert head + tail == expected
    assert resumed.state_dict() == whole.state_dict()


def test_state_is_plain_python_and_an_older_state_loads():
    rule = UnitHealthRule()
    run(rule, [[site({0, 1})]] * 2)
    state = rule.state_dict()
    assert _plain(state)
    older = UnitHealthRule()
    older.load_state_dict({"dead_streak": {"net.1": 1}, "saturation_streak": {}})  # before masks were kept
    assert older.previous_dead == {} and older.last_revival == {}
    assert older.judge([site({0, 1})], last_step=9).layers[0].dead == 2


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (int, float, bool, str)


@pytest.mark.parametrize("dead,harm_seen,revived", [
    ({0}, None, True),  # nothing judges the loss: revived as reported (25% of the layer)
    ({0}, set(), False),  # a loss is judged and shows no harm yet: left as it is
    ({0}, {"other"}, False),  # harm seen in another layer only
    ({0}, {"net.1"}, True),  # this layer's dead units were shown to hurt the loss
    ({0, 1, 2}, set(), True),  # 75% dead: most of the layer's function is gone, revived at once
])
def test_a_partly_dead_layer_waits_for_harm_and_a_mostly_dead_one_does_not(dead, harm_seen, revived):
    rule = UnitHealthRule()
    revivals = [rule.judge([site(dead)], last_step=10 * i + 9, act=True, harm_seen=harm_seen).revive
                for i in range(2)]
    assert [r for r in revivals if r] == ([{"net.1": sorted(dead)}] if revived else [])


def test_a_layer_left_for_want_of_harm_starts_no_cooldown():
    rule = UnitHealthRule(redo_cooldown_steps=1000)
    waits = [rule.judge([site({0})], last_step=10 * i + 9, act=True, harm_seen=set()).revive for i in range(3)]
    assert waits == [{}, {}, {}] and rule.last_revival == {}
    # The harm is seen a window later: revived then, not 1000 steps later.
    assert rule.judge([site({0})], last_step=39, act=True, harm_seen={"net.1"}).revive == {"net.1": [0]}


def test_candidates_are_named_without_acting_and_a_later_revival_starts_the_cooldown():
    """Observing (``act=False``), the verdict still names the units a revival would take
    (another remedy may take them with it); nothing counts as revived until
    ``count_revived``, which starts the layer's cooldown like a revival in ``judge``."""
    rule = UnitHealthRule(redo_cooldown_steps=30)
    verdict = rule.judge([site({0, 1, 2, 3})], last_step=9, act=False)
    assert verdict.revive == {} and verdict.candidates == {"net.1": [0, 1, 2, 3]}
    assert rule.judge([site({0, 1, 2, 3})], last_step=19, act=False).candidates == {"net.1": [0, 1, 2, 3]}
    rule.count_revived("net.1", [0, 1, 2, 3], 19)
    assert rule.judge([site({0, 1, 2, 3})], last_step=29, act=False).candidates == {}  # cooling down
    assert rule.judge([site({0, 1, 2, 3}, producer=None)], last_step=59, act=False).candidates == {}  # no wiring
    assert rule.judge([site({0, 1, 2, 3})], last_step=69, act=False).candidates == {"net.1": [0, 1, 2, 3]}
