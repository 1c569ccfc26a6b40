"""DeviceWindow against the obvious merge of each reduction kind, across ranks and checkpoints."""

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.stats.window import REDUCTIONS, DeviceWindow, reference_merge

values = st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=0, max_size=12)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=0)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(REDUCTIONS), values)
def test_each_reduction_equals_the_plain_merge(kind, sequence):
    if kind != "first":  # NaN semantics of sum/min/max are torch's; keep them finite here
        sequence = [v for v in sequence if not math.isnan(v)]
    window = DeviceWindow()
    window.declare("x", reduce=kind)
    window.allocate("cpu")
    for v in sequence:
        window.update(x=torch.tensor(v, dtype=torch.float64))
    assert _same(window.read()["x"], reference_merge(sequence, kind))


def test_contiguous_slots_of_one_kind_merge_together_and_reset_to_their_identity():
    window = DeviceWindow()
    window.declare("a", 3, "sum")
    window.declare("b", (), "sum")
    window.declare("lo", (), "min")
    window.declare("hi", 2, "max")
    window.update(a=torch.tensor([1.0, 2.0, 3.0]), b=torch.tensor(4.0), lo=torch.tensor(5.0), hi=torch.tensor([1.0, -1.0]))
    window.update(a=torch.ones(3), b=torch.tensor(1.0), lo=torch.tensor(-2.0), hi=torch.tensor([0.0, 7.0]))
    assert window.read() == {"a": [2.0, 3.0, 4.0], "b": 5.0, "lo": -2.0, "hi": [1.0, 7.0]}
    window.reset()
    assert window.read() == {"a": [0.0, 0.0, 0.0], "b": 0.0, "lo": math.inf, "hi": [-math.inf, -math.inf]}


def test_a_slot_declared_late_keeps_every_earlier_value():
    window = DeviceWindow()
    window.declare("steps")
    window.update(steps=torch.tensor(2.0))
    window.declare("peak", 4, "max")
    window.update(peak=torch.arange(4.0))
    assert window.read() == {"steps": 2.0, "peak": [0.0, 1.0, 2.0, 3.0]}


def test_bad_declarations_and_updates_are_refused():
    window = DeviceWindow()
    window.declare("x", 2, "sum")
    with pytest.raises(ValueError, match="`reduce`"):
        window.declare("y", reduce="mean")
    with pytest.raises(ValueError, match="'x'"):
        window.declare("x", 3, "sum")
    with pytest.raises(KeyError, match="'z'"):
        window.update(z=torch.tensor(1.0))


def test_read_brings_extra_tensors_in_the_same_transfer():
    window = DeviceWindow()
    window.declare("n")
    window.update(n=torch.tensor(1.0))
    out = window.read(extra={"layer_sumsq": torch.tensor([4.0, 9.0])})
    assert out == {"n": 1.0, "layer_sumsq": [4.0, 9.0]}


def test_reduce_across_makes_one_collective_per_kind_with_nan_safe_max_and_first():
    # Two ranks simulated in one process: rank r's all_reduce returns the merge of both ranks'
    # tensors for that call (the calls come in the same order on both ranks).
    ranks = [DeviceWindow(), DeviceWindow()]
    for w in ranks:
        w.declare("count", 2, "sum")
        w.declare("first_step", (), "min")
        w.declare("peak", 2, "max")
        w.declare("median_at_spike", (), "first")
        w.allocate("cpu")
    ranks[0].update(count=torch.tensor([1.0, 2.0]), first_step=torch.tensor(7.0), peak=torch.tensor([math.nan, 1.0]))
    ranks[1].update(count=torch.tensor([3.0, 4.0]), first_step=torch.tensor(5.0), peak=torch.tensor([2.0, 3.0]),
                    median_at_spike=torch.tensor(0.5))
    sent: list[list[torch.Tensor]] = [[], []]
    for rank, w in enumerate(ranks):
        w.reduce_across(lambda t, op, r=rank: sent[r].append((t.clone(), op)) or t)
    ops = [op for _, op in sent[0]]
    assert ops == ["sum", "min", "max", "min"]  # one per kind present; "first" travels as a MIN
    merged = []
    for (a, op), (b, _) in zip(*sent):
        merged.append({"sum": a + b, "min": torch.minimum(a, b), "max": torch.maximum(a, b)}[op])
    calls = iter(merged)
    for w in ranks:  # replay with the merged results
        w.reset()
    ranks[0].update(count=torch.tensor([1.0, 2.0]), first_step=torch.tensor(7.0), peak=torch.tensor([math.nan, 1.0]))
    ranks[0].reduce_across(lambda t, op: next(calls))
    out = ranks[0].read()
    assert out["count"] == [4.0, 6.0] and out["first_step"] == 5.0
    assert out["peak"] == [math.inf, 3.0]  # rank 0's NaN survives the MAX as +inf
    assert out["median_at_spike"] == 0.5  # rank 0 never set it: rank 1's value wins


def test_checkpoint_by_name_loads_with_weights_only_and_tolerates_a_missing_or_reshaped_slot():
    old = DeviceWindow()
    old.declare("steps")
    old.declare("layers", 3, "sum")
    old.update(steps=torch.tensor(5.0), layers=torch.tensor([1.0, 2.0, 3.0]))
    buffer = io.BytesIO()
    torch.save(old.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    new = DeviceWindow()
    new.declare("steps")
    new.declare("layers", 4, "sum")  # the model grew a layer: that slot starts afresh
    new.declare("spikes", (), "max")  # a slot the checkpoint predates
    new.load_state_dict(state)
    assert new.read() == {"steps": 5.0, "layers": [0.0] * 4, "spikes": -math.inf}
