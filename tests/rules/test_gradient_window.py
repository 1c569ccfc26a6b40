"""The device-side window and spike detector, driven by sequences of norms (no Trainer)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.rules import GradientWindow, SpikeDetector
from lightning_convergence.rules.gradient_window import step_norms
from lightning_convergence.stats import sum_by_group


def _run_spikes(values, **kwargs):
    detector = SpikeDetector(**kwargs)
    return [bool(detector.update(torch.tensor(v))[0]) for v in values]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0] * 10, [False] * 10),
        ([1.0] * 8 + [50.0], [False] * 8 + [True]),
        ([1.0] * 8 + [9.0], [False] * 9),  # below factor 10
        ([1.0] * 3 + [50.0], [False] * 4),  # not enough history yet
        ([1.0] * 8 + [math.nan, 50.0], [False] * 9 + [True]),  # NaN never enters the history
        ([1.0] * 8 + [math.inf], [False] * 9),  # non-finite is not a spike (it is non-finite)
    ],
)
def test_spike_table(values, expected):
    assert _run_spikes(values, history=16, factor=10.0, min_history=8) == expected


def test_gradual_growth_is_not_a_spike():
    # A norm that grows 10x over 60 steps (as in healthy training) never jumps 10x its median.
    values = [0.3 * 10 ** (i / 60) for i in range(60)]
    assert not any(_run_spikes(values, history=32, factor=10.0, min_history=8))


@pytest.mark.parametrize("host", [False, True], ids=["device", "host"])
def test_window_summary_counts_and_first_steps(host):
    window = GradientWindow(num_layers=2, trace_capacity=10, host=host)
    detector = SpikeDetector(history=8, factor=10.0, min_history=3)
    norms = [1.0, 1.0, 1.0, 100.0, math.nan, 1.0]
    for step, norm in enumerate(norms):
        total = norm if host else torch.tensor(norm)
        spike, median = detector.update(total)
        layer_sumsq = [(norm / 2) ** 2] * 2
        window.update(step, total, spike, median, layer_sumsq if host else torch.tensor(layer_sumsq))
    window.update_loss(4, torch.tensor(math.nan))
    window.update_loss(5, torch.tensor(0.5))
    summary, extra = window.read(extra=torch.tensor([7.0]))
    assert extra == [7.0]
    assert summary.steps == 6 and summary.spike_steps == 1 and summary.first_spike_step == 3
    assert summary.nonfinite_grad_steps == 1 and summary.first_nonfinite_grad_step == 4
    assert summary.nonfinite_loss_steps == 1 and summary.first_nonfinite_loss_step == 4
    assert summary.max_total_norm == 100.0 and summary.spike_median == 1.0
    assert summary.layer_nonfinite_steps == [1, 1]
    assert summary.layer_mean_norms[0] == pytest.approx((0.5 * 4 + 50.0) / 5)
    assert [s for s, _ in summary.total_norm_trace] == list(range(6))
    window.reset()
    empty, _ = window.read()
    assert empty.steps == 0 and empty.first_spike_step is None and empty.total_norm_trace == []


def test_spike_detector_state_round_trip():
    a = SpikeDetector(history=8, factor=10.0, min_history=3)
    for v in [1.0, 2.0, 3.0]:
        a.update(torch.tensor(v))
    b = SpikeDetector(history=8, factor=10.0, min_history=3)
    b.load_state_dict(a.state_dict())
    assert bool(b.update(torch.tensor(100.0))[0]) == bool(a.update(torch.tensor(100.0))[0]) is True


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1e30), st.just(math.nan), st.just(math.inf)), min_size=1, max_size=40))
def test_window_never_raises_and_stays_in_range(values):
    window = GradientWindow(num_layers=1, trace_capacity=64)
    detector = SpikeDetector(history=8, factor=10.0, min_history=3)
    for step, value in enumerate(values):
        total = torch.tensor(value)
        spike, median = detector.update(total)
        window.update(step, total, spike, median, (total * total).reshape(1))
    summary, _ = window.read()
    assert summary.steps == len(values)
    assert 0 <= summary.spike_steps <= len(values)
    assert summary.nonfinite_grad_steps == sum(not math.isfinite(v) for v in values)
    assert math.isfinite(summary.max_total_norm) and summary.max_total_norm >= 0


# ------------------------------------------------------------- the host path against the device path

finite_or_not = st.one_of(st.floats(0, 1e15), st.just(math.nan), st.just(math.inf))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite_or_not, min_size=3, max_size=3), min_size=1, max_size=30),
       st.integers(1, 20), st.lists(st.one_of(st.floats(-10, 10), st.just(math.nan)), min_size=1, max_size=30))
def test_host_path_agrees_with_the_device_path(per_tensor_sumsq, restore_at, losses):
    """The same steps through both paths (per-tensor sums of squares, grouped into 2 layers) give
    the same summary; a checkpoint taken on one path and restored on the other continues alike."""
    group_index = torch.tensor([0, 0, 1])
    paths = {}
    for host in (False, True):
        window, detector = GradientWindow(2, trace_capacity=64, host=host), SpikeDetector(8, 10.0, 3)
        for step, row in enumerate(per_tensor_sumsq):
            if step == restore_at:  # restore into the other path's kind of window and detector
                state, spike_state = window.state_dict(), detector.state_dict()
                window, detector = GradientWindow(2, trace_capacity=64, host=not host), SpikeDetector(8, 10.0, 3)
                window.load_state_dict(state, torch.device("cpu"))
                detector.load_state_dict(spike_state)
            sumsq = torch.tensor(row, dtype=torch.float32)
            if window.host:
                total, layers = math.sqrt(sum(row[:2]) + row[2]), [row[0] + row[1], row[2]]
            else:
                total, layers = sumsq.sum().sqrt(), sum_by_group(sumsq, group_index, 2)
            spike, median = detector.update(total)
            window.update(step, total, spike, median, layers)
            window.update_loss(step, torch.tensor(losses[step % len(losses)]))
        paths[host] = window.read()[0]
    device, host = paths[False], paths[True]
    for name in ("steps", "nonfinite_grad_steps", "spike_steps", "nonfinite_loss_steps", "loss_steps",
                 "first_nonfinite_grad_step", "first_spike_step", "first_nonfinite_loss_step",
                 "layer_nonfinite_steps"):
        assert getattr(host, name) == getattr(device, name), name
    for name in ("max_total_norm", "max_spike_ratio", "spike_median", "finite_loss_sum"):
        assert getattr(host, name) == pytest.approx(getattr(device, name), rel=1e-5, nan_ok=True), name
    assert host.layer_mean_norms == pytest.approx(device.layer_mean_norms, rel=1e-5, nan_ok=True)
    assert [s for s, _ in host.total_norm_trace] == [s for s, _ in device.total_norm_trace]
    assert [n for _, n in host.total_norm_trace] == pytest.approx([n for _, n in device.total_norm_trace],
                                                                  rel=1e-5, nan_ok=True)


def test_step_norms_host_and_device():
    """``step_norms`` reads CPU sums on the host (floats), and stays on tensors with the host path off."""
    from lightning_convergence.stats import host as host_module

    sumsq, group_index = torch.tensor([1.0, 3.0, 12.0]), torch.tensor([0, 0, 1])
    total, layers = step_norms(sumsq, group_index, 2)
    assert isinstance(total, float) and total == 4.0 and layers == [4.0, 12.0]
    host_module.HOST_PATH_ON_CPU = False
    try:
        total, layers = step_norms(sumsq, group_index, 2)
    finally:
        host_module.HOST_PATH_ON_CPU = True
    assert isinstance(total, torch.Tensor) and total.item() == 4.0 and layers.tolist() == [4.0, 12.0]
