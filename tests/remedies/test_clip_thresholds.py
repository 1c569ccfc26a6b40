"""The clipping thresholds' host path (floats, for gradients on the CPU) against their device path
(0-d tensors), step for step, including NaN/Inf norms, the warm-up and a checkpoint crossing over."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.remedies.clip_thresholds import PercentileThreshold, ZScoreThreshold
from lightning_convergence.remedies.clipping import clip_coefficient, global_norm, scale_gradients_

norms = st.lists(st.one_of(st.floats(1e-3, 1e4), st.just(math.nan), st.just(math.inf)), min_size=1, max_size=60)


def _run_both(make, values, restore_at=None):
    """Thresholds from the device path and the host path; at ``restore_at`` each path's state is
    restored into a fresh rule that continues on the other path."""
    out = {}
    for host in (False, True):
        rule, on_host, got = make(), host, []
        for step, v in enumerate(values):
            if step == restore_at:
                fresh = make()
                fresh.load_state_dict(rule.state_dict())
                rule, on_host = fresh, not on_host
            got.append(float(rule.update(v if on_host else torch.tensor(v, dtype=torch.float32))))
        out[host] = got
    return out[False], out[True]


def _close(a, b):
    return all((math.isinf(x) and x == y) or x == pytest.approx(y, rel=1e-5) for x, y in zip(a, b))


@settings(max_examples=60, deadline=None)
@given(norms, st.floats(1.0, 100.0), st.integers(1, 8), st.booleans(), st.integers(0, 60))
def test_percentile_host_path_equals_the_device_path(values, percentile, window, include_current, restore_at):
    values = [float(torch.tensor(v, dtype=torch.float32)) for v in values]  # as the device path holds them
    device, host = _run_both(lambda: PercentileThreshold(percentile, window, include_current), values, restore_at)
    assert _close(device, host)


@settings(max_examples=60, deadline=None)
@given(norms, st.integers(0, 6), st.sampled_from([1.0, 3.0]), st.integers(0, 60))
def test_zscore_host_path_equals_the_device_path(values, warmup, min_ratio, restore_at):
    values = [float(torch.tensor(v, dtype=torch.float32)) for v in values]
    make = lambda: ZScoreThreshold(z_thresh=1.5, alpha=0.8, warmup_steps=warmup, min_ratio=min_ratio)  # noqa: E731
    device, host = _run_both(make, values, restore_at)
    assert _close(device, host)


def test_zscore_host_path_clips_a_spike_and_reports_its_state():
    rule = ZScoreThreshold(z_thresh=2.5, warmup_steps=3)
    thresholds = [rule.update(v) for v in [1.0, 1.2, 0.8, 1.1, 50.0]]
    assert all(isinstance(t, float) for t in thresholds)
    assert thresholds[:4] == [math.inf] * 4 and thresholds[4] < 50.0
    assert rule.statistics()["initialised"] == 1.0 and rule.initialised_flag().item() == 1.0
    assert math.isfinite(rule.onset().item())


def test_clip_coefficient_and_scaling_on_floats_match_tensors():
    for norm, threshold, max_norm in [(10.0, 2.0, None), (1.0, math.inf, None), (10.0, math.inf, 5.0),
                                      (math.nan, 1.0, None), (math.inf, 1.0, None), (0.5, 2.0, 0.1)]:
        on_host = clip_coefficient(norm, threshold, max_norm)
        on_device = clip_coefficient(torch.tensor(norm), torch.tensor(threshold, dtype=torch.float64), max_norm)
        assert isinstance(on_host, float) and on_host == pytest.approx(on_device.item(), rel=1e-6)
    grads = [torch.full((3,), 2.0), torch.full((2,), 4.0, dtype=torch.float64)]
    same = [g.clone() for g in grads]
    scale_gradients_(grads, 0.25)
    scale_gradients_(same, torch.tensor(0.25, dtype=torch.float64))
    assert all(torch.equal(a, b) for a, b in zip(grads, same)) and grads[0][0].item() == 0.5
    assert global_norm(torch.tensor([9.0, 16.0])) == 5.0
