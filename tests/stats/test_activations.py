"""The per-unit accumulator (declared window slots) against the float64 reference, on random,
planted and odd inputs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.stats.activations import (
    UnitAccumulator,
    activation_kind,
    dormant_mask,
    dormant_units,
    unit_activity_reference,
    unit_dim,
    unit_slots,
)
from lightning_convergence.stats.window import DeviceWindow

ACTIVATIONS = {
    "nonnegative": torch.relu,
    "signed": torch.nn.functional.gelu,
    "positive": torch.nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def accumulate(batches, dim, kind, eps=0.01):
    acc = UnitAccumulator(kind, dim, eps)
    for batch in batches:
        acc.update(batch)
    return acc.activity()


def assert_matches_reference(batches, dim, kind):
    activity = accumulate(batches, dim, kind)
    ref = unit_activity_reference(batches, dim, kind)
    dead = (activity.peak <= 0).tolist() if kind in ("nonnegative", "signed") else [False] * len(ref["dead"])
    assert dead == ref["dead"]
    torch.testing.assert_close(activity.abs_sum.double(), torch.tensor(ref["abs_sum"], dtype=torch.float64),
                               rtol=1e-5, atol=1e-4)
    assert activity.saturated.tolist() == [float(s) for s in ref["saturated"]]
    if kind in ("sigmoid", "tanh"):
        assert activity.values_per_unit.item() == sum(b.numel() for b in batches) // batches[0].shape[dim]
    else:
        assert activity.values_per_unit is None


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(ACTIVATIONS)), shape=st.sampled_from([(6, 5), (3, 4, 7), (2, 3, 4, 4)]),
       batches=st.integers(1, 3), scale=st.sampled_from([0.1, 1.0, 8.0]), seed=st.integers(0, 1000))
def test_accumulator_matches_reference_on_random_outputs(kind, shape, batches, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    dim = 1 if len(shape) == 4 else len(shape) - 1
    outputs = [ACTIVATIONS[kind](torch.randn(shape, generator=generator) * scale) for _ in range(batches)]
    assert_matches_reference(outputs, dim, kind)


@pytest.mark.parametrize("shape,dim", [((16, 8, 5, 5), 1), ((16, 12), 1), ((4, 9, 6), 2)])
def test_planted_dead_unit_is_found_in_conv_linear_and_sequence_outputs(shape, dim):
    x = torch.randn(shape)
    index = [slice(None)] * len(shape)
    index[dim] = 3
    x[tuple(index)] = -torch.rand(x[tuple(index)].shape) - 0.1  # unit 3 is always negative before ReLU
    activity = accumulate([torch.relu(x), torch.relu(x.flip(0))], dim, "nonnegative")
    dead = (activity.peak <= 0).nonzero().flatten().tolist()
    assert dead == [3]
    assert_matches_reference([torch.relu(x)], dim, "nonnegative")


def test_leaky_relu_unit_that_never_turns_positive_is_dead():
    x = torch.randn(32, 4)
    x[:, 0] = -x[:, 0].abs()
    activity = accumulate([torch.nn.functional.leaky_relu(x, 0.1)], 1, "signed")
    assert (activity.peak <= 0).tolist() == [True, False, False, False]


def test_saturation_counts_flat_ends_of_sigmoid_and_tanh():
    values = torch.tensor([[0.001, 0.5, 0.999, 0.3]])
    assert accumulate([values], 1, "sigmoid").saturated.tolist() == [1.0, 0.0, 1.0, 0.0]
    values = torch.tensor([[-0.995, 0.0, 0.999, 0.5]])
    assert accumulate([values], 1, "tanh").saturated.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_kinds_that_cannot_die_report_no_dead_units():
    activity = accumulate([torch.zeros(4, 3) + 0.5], 1, "sigmoid")
    assert bool((activity.peak > 0).all())


def test_half_precision_and_nan_outputs_do_not_crash():
    activity = accumulate([torch.relu(torch.randn(8, 4)).to(torch.bfloat16)], 1, "nonnegative")
    assert activity.abs_sum.dtype == torch.float64
    assert_matches_reference([torch.sigmoid(torch.randn(8, 4)).half()], 1, "sigmoid")
    x = torch.relu(torch.randn(8, 4))
    x[0, 1] = math.nan
    activity = accumulate([x], 1, "nonnegative")
    assert not bool(activity.peak[1] <= 0)  # a NaN unit is not called dead


def test_changed_unit_count_raises():
    acc = UnitAccumulator("nonnegative", 1)
    acc.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unit count changed"):
        acc.update(torch.zeros(2, 4))


def test_reset_starts_a_new_window():
    acc = UnitAccumulator("signed", 1)
    acc.update(torch.ones(2, 3))
    acc.reset()
    assert acc.activity().peak.tolist() == [-math.inf] * 3 and acc.batches == 0
    acc.update(torch.zeros(2, 3))
    assert acc.activity().abs_sum.tolist() == [0.0, 0.0, 0.0] and acc.batches == 1


def test_an_empty_accumulator_reads_as_an_empty_window():
    activity = UnitAccumulator("signed", 1).activity()
    assert activity.abs_sum.numel() == 0 and activity.peak.numel() == 0 and activity.batches == 0


def test_sites_sharing_a_window_keep_their_slots_apart_and_read_in_one_transfer():
    window = DeviceWindow()
    relu = UnitAccumulator("nonnegative", 1, window=window, prefix="a/")
    tanh = UnitAccumulator("tanh", 1, window=window, prefix="b/")
    x = torch.randn(5, 4)
    relu.update(torch.relu(x))
    tanh.update(torch.tanh(x * 10))
    tanh.update(torch.tanh(x * 10))
    assert {s.name for s in window.slots} == {"a/abs_sum", "b/abs_sum", "b/saturated", "b/values"}
    values = window.read()
    for acc, batches in ((relu, [torch.relu(x)]), (tanh, [torch.tanh(x * 10)] * 2)):
        host, ref = acc.host(values), unit_activity_reference(batches, 1, acc.kind)
        torch.testing.assert_close(host.abs_sum, torch.tensor(ref["abs_sum"], dtype=torch.float64))
        assert host.saturated.tolist() == [float(s) for s in ref["saturated"]]
        assert torch.equal(host.abs_sum, acc.activity().abs_sum)
    assert tanh.host(values).values_per_unit.item() == 10.0
    relu.reset()
    assert window.read()["a/abs_sum"] == [0.0] * 4 and window.read()["b/values"] == 10.0


@pytest.mark.parametrize("kind,slots", [
    ("nonnegative", {"abs_sum": "sum"}),
    ("signed", {"abs_sum": "sum", "peak": "max"}),
    ("positive", {"abs_sum": "sum"}),
    ("sigmoid", {"abs_sum": "sum", "saturated": "sum", "values": "sum"}),
])
def test_each_kind_declares_only_what_it_measures(kind, slots):
    assert unit_slots(kind) == slots


@pytest.mark.parametrize("sums,tau,expected", [
    ([10.0, 10.0, 0.5, 0.0], 0.1, [False, False, True, True]),
    ([1.0, 1.0, 1.0], 0.1, [False, False, False]),
    ([0.0, 0.0], 0.1, [True, True]),  # a silent layer is all dormant
    ([4.0, 0.35, 0.0], 0.25, [False, True, True]),
    ([1.0, math.nan, 0.0], 0.1, [False, False, False]),  # a NaN layer says nothing about dormancy
    ([], 0.1, []),
])
def test_dormant_mask_table(sums, tau, expected):
    assert dormant_mask(torch.tensor(sums), tau).tolist() == expected
    assert dormant_mask(torch.tensor(sums, dtype=torch.float64), tau).tolist() == expected
    assert dormant_units(sums, tau) == expected  # the host twin the window judgment uses


def test_unit_dim_rule_and_kinds():
    assert unit_dim(torch.zeros(2, 8, 3, 3), after_conv=True) == 1
    assert unit_dim(torch.zeros(2, 8), after_conv=False) == 1
    assert unit_dim(torch.zeros(2, 5, 8), after_conv=False) == 2
    assert unit_dim(torch.zeros(2, 5, 8), after_conv=True) == 1
    assert activation_kind(torch.nn.Tanh()) == "tanh" and activation_kind(torch.nn.Conv2d(1, 1, 1)) is None


@pytest.mark.parametrize("kind", ["nonnegative", "signed", "positive", "sigmoid", "tanh"])
def test_host_lists_are_the_host_tensors_as_numbers(kind):
    F = torch.nn.functional
    # The window judgment reads host_lists; host (tensors) is the reference it must equal.
    acc = UnitAccumulator(kind, 1)
    x = torch.randn(6, 5)
    x[:, 2] = -1.0  # a dead unit for the kinds that can die
    for scale in (1.0, 10.0):
        acc.update({"nonnegative": torch.relu, "signed": F.gelu, "positive": F.softplus,
                    "sigmoid": torch.sigmoid, "tanh": torch.tanh}[kind](x * scale))
    values = acc.window.read()
    host = acc.host(values)
    count = 0.0 if host.values_per_unit is None else host.values_per_unit.item()
    assert acc.host_lists(values) == (host.peak.tolist(), host.abs_sum.tolist(), host.saturated.tolist(), count)


def test_sites_merged_in_one_update_equal_sites_merged_one_by_one():
    # UnitSites merges a batch's statistics of every site in one window update (several runs of
    # sum and max slots, float32 and float64 values): the same window as one update per site.
    generator = torch.Generator().manual_seed(3)
    kinds = {"a/": ("nonnegative", torch.relu), "b/": ("signed", torch.nn.functional.gelu),
             "c/": ("tanh", torch.tanh), "d/": ("signed", torch.nn.functional.silu)}
    batches = [{p: act(torch.randn(6, 5, generator=generator) * 3) for p, (_, act) in kinds.items()} for _ in range(3)]
    one_by_one, together = DeviceWindow(), DeviceWindow()
    singles = {p: UnitAccumulator(kind, 1, window=one_by_one, prefix=p) for p, (kind, _) in kinds.items()}
    merged = {p: UnitAccumulator(kind, 1, window=together, prefix=p) for p, (kind, _) in kinds.items()}
    for batch in batches:
        for prefix, output in batch.items():
            singles[prefix].update(output)
        pending = {}
        for prefix, output in batch.items():
            pending.update(merged[prefix].batch_slots(output))
        if batch is batches[0]:
            assert together.read()["a/abs_sum"] == [0.0] * 5  # counted, not merged, until the update
            assert merged["a/"].batches == 1
        together.update(**pending)
    assert together.read() == one_by_one.read()
    assert [a.batches for a in merged.values()] == [3] * 4


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_a_1d_output_is_one_unit_per_value_and_merges_with_other_sites(kind):
    # Shape [N] (a squeezed last layer): each value is its own unit, seen once per batch; its
    # statistics keep the unit count, so they concatenate with other sites' in one update.
    generator = torch.Generator().manual_seed(1)
    batches = [ACTIVATIONS[kind](torch.randn(7, generator=generator) * 3) for _ in range(2)]
    window = DeviceWindow()
    site = UnitAccumulator(kind, 0, window=window, prefix="last/")
    other = UnitAccumulator("nonnegative", 1, window=window, prefix="hidden/")
    for batch in batches:
        window.update(**site.batch_slots(batch), **other.batch_slots(torch.relu(torch.randn(7, 4))))
    activity, ref = site.host(window.read()), unit_activity_reference(batches, 0, kind)
    torch.testing.assert_close(activity.abs_sum, torch.tensor(ref["abs_sum"], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    if kind in ("nonnegative", "signed"):
        assert (activity.peak <= 0).tolist() == ref["dead"]
    assert activity.saturated.tolist() == [float(s) for s in ref["saturated"]]
    if kind in ("sigmoid", "tanh"):
        assert activity.values_per_unit.item() == 2.0


def test_a_1d_statistic_is_a_copy_of_the_activation():
    x = torch.tensor([1.0, -2.0, 3.0])
    stats = UnitAccumulator("signed", 0).batch_slots(x)
    x.mul_(0)  # an in-place op after the hook, before the batch's statistics are merged
    assert stats["peak"].tolist() == [1.0, -2.0, 3.0] and stats["abs_sum"].tolist() == [1.0, 2.0, 3.0]
