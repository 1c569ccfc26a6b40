"""Clipping rules against their peers: numpy's percentile, the `autoclip` and `zclip` packages,
and NFNets' AGC formula written out naively."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_convergence.remedies import (
    PercentileThreshold,
    ZScoreThreshold,
    adaptive_clip_,
    clip_coefficient,
    scale_gradients_,
)

NORMS = [1.0, 1.3, 0.8, 1.1, 9.0, 1.0, math.nan, 1.2, 0.9, 25.0, 1.1, math.inf, 1.0, 0.7, 1.4]


@pytest.mark.parametrize("percentile", [10.0, 50.0, 90.0, 100.0])
@pytest.mark.parametrize("window", [4, 100])
def test_percentile_matches_numpy_over_the_window(percentile, window):
    rule = PercentileThreshold(percentile, window=window)
    history: list[float] = []  # the last `window` steps; NaN marks a non-finite step's slot
    for norm in NORMS:
        history.append(norm if math.isfinite(norm) else math.nan)
        history = history[-window:]
        expected = np.nanpercentile(np.array(history), percentile)
        threshold = rule.update(torch.tensor(norm, dtype=torch.float64)).item()
        assert threshold == pytest.approx(expected, rel=1e-12)


def _recorded_gradients(steps=40, seed=0):
    """A recorded sequence of gradients for a small model, with spikes at steps 12 and 30."""
    generator = torch.Generator().manual_seed(seed)
    grads = []
    for step in range(steps):
        scale = 50.0 if step in (12, 30) else 1.0
        grads.append([torch.randn(8, 4, generator=generator) * scale, torch.randn(8, generator=generator) * scale])
    return grads


def _model():
    torch.manual_seed(0)
    return nn.Linear(4, 8)


def test_percentile_without_current_matches_autoclip_quantile_clip():
    from autoclip.torch import QuantileClip

    ours_model, theirs_model = _model(), _model()
    theirs = QuantileClip(theirs_model.parameters(), quantile=0.1, history_length=1000, global_threshold=True)
    rule = PercentileThreshold(10.0, window=1000, include_current=False)
    for step_grads in _recorded_gradients():
        for model in (ours_model, theirs_model):
            for param, grad in zip(model.parameters(), step_grads):
                param.grad = grad.clone()
        norm = torch.stack([p.grad.norm() for p in ours_model.parameters()]).norm()
        scale_gradients_([p.grad for p in ours_model.parameters()], clip_coefficient(norm, rule.update(norm)))
        theirs.step()
        for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_zscore_matches_zclip_without_its_cap():
    from zclip import ZClip

    ours_model, theirs_model = _model(), _model()
    theirs = ZClip(alpha=0.97, z_thresh=2.5, max_grad_norm=None, warmup_steps=10)
    rule = ZScoreThreshold(z_thresh=2.5, alpha=0.97, warmup_steps=10)
    clipped_steps = []
    for step, step_grads in enumerate(_recorded_gradients()):
        for model in (ours_model, theirs_model):
            for param, grad in zip(model.parameters(), step_grads):
                param.grad = grad.clone()
        norm = torch.stack([p.grad.norm() for p in ours_model.parameters()]).norm()
        threshold = rule.update(norm)
        scale_gradients_([p.grad for p in ours_model.parameters()], clip_coefficient(norm, threshold))
        theirs.step(theirs_model)
        if math.isfinite(threshold.item()):
            clipped_steps.append(step)
        for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
        assert rule.statistics()["mean"] == pytest.approx(theirs.mean if theirs.initialized else 0.0, rel=1e-5)
    assert 30 in clipped_steps and 12 in clipped_steps  # the spikes after warm-up were clipped


@pytest.mark.parametrize("spike, clipped", [(2.0, False), (4.5, False), (5.5, True), (100.0, True)])
def test_zscore_min_ratio_clips_only_norms_that_many_times_the_mean(spike, clipped):
    """With a steady norm the z-score of any rise is huge; ``min_ratio`` asks for size as well."""
    plain, sized = ZScoreThreshold(z_thresh=4.0, alpha=0.9, warmup_steps=5), ZScoreThreshold(
        z_thresh=4.0, alpha=0.9, warmup_steps=5, min_ratio=5.0)
    for value in [1.0, 1.01, 0.99, 1.0, 1.02, 1.0, 0.98]:
        plain.update(torch.tensor(value))
        sized.update(torch.tensor(value))
    # The line plotted: the higher of mean + z * std and min_ratio * mean.
    assert sized.onset().item() == pytest.approx(5.0 * sized.statistics()["mean"], rel=1e-9)
    assert math.isfinite(plain.update(torch.tensor(spike)).item())  # ZClip as published clips every one
    assert math.isfinite(sized.update(torch.tensor(spike)).item()) == clipped


def test_zscore_skipping_the_warm_up_ops_once_known_started_changes_nothing():
    """The fast path (the caller read ``initialised`` at a logging step) against the full update
    on the same norms, NaN/Inf and spikes included: the same thresholds and the same state."""
    norms = [1.0, 1.2, math.nan, 0.9, 1.1, 1.05, 30.0, math.inf, 0.95, 1.0, 500.0, 1.02, 0.98] * 3
    full, fast = (ZScoreThreshold(z_thresh=2.5, alpha=0.9, warmup_steps=4, min_ratio=2.0) for _ in range(2))
    for step, value in enumerate(norms):
        if step == 8:  # a logging step: the caller reads the flag once
            fast.note_read(float(fast.initialised_flag()))
            assert fast.known_initialised
        a, b = full.update(torch.tensor(value)), fast.update(torch.tensor(value))
        assert torch.equal(a, b), step
    for name, value in full.state_dict().items():
        assert torch.equal(value, fast.state_dict()[name]), name


def test_zscore_ignores_non_finite_norms():
    rule = ZScoreThreshold(warmup_steps=3)
    for value in [1.0, math.nan, 1.1, math.inf, 0.9]:
        assert rule.update(torch.tensor(value)).item() == math.inf
    mean, var, count, initialised = rule.statistics().values()
    assert count == 3 and initialised == 1.0 and mean == pytest.approx(1.0)


def _naive_agc(weight, grad, clip_factor, eps):
    """NFNets' rule per unit, written out with Python loops."""
    out = grad.clone()
    rows = range(weight.shape[0]) if weight.ndim > 1 else [None]
    for row in rows:
        w = weight if row is None else weight[row]
        g = grad if row is None else grad[row]
        limit = max(w.norm().item(), eps) * clip_factor
        g_norm = g.norm().item()
        if g_norm > limit:
            scaled = g * (limit / max(g_norm, 1e-6))
            if row is None:
                out = scaled
            else:
                out[row] = scaled
    return out


@pytest.mark.parametrize("shape", [(6, 3, 2, 2), (5, 4), (7,)])
def test_agc_matches_the_naive_formula(shape):
    generator = torch.Generator().manual_seed(1)
    param = nn.Parameter(torch.randn(shape, generator=generator))
    grad = torch.randn(shape, generator=generator) * torch.logspace(-3, 1, shape[0]).reshape(-1, *[1] * (len(shape) - 1))
    param.grad = grad.clone()
    expected = _naive_agc(param.detach(), grad, clip_factor=0.05, eps=1e-3)
    fraction = adaptive_clip_([param], clip_factor=0.05, eps=1e-3)
    torch.testing.assert_close(param.grad, expected, rtol=1e-5, atol=1e-7)
    assert 0.0 < fraction.item() <= 1.0


@pytest.mark.parametrize(
    ("norm", "threshold", "max_norm", "expected"),
    [
        (10.0, 2.0, None, 2.0 / (10.0 + 1e-6)),
        (1.0, 2.0, None, 1.0),
        (10.0, math.inf, None, 1.0),
        (10.0, math.inf, 5.0, 5.0 / (10.0 + 1e-6)),
        (math.nan, 1.0, None, 1.0),
        (math.inf, 1.0, None, 1.0),
    ],
)
def test_clip_coefficient_table(norm, threshold, max_norm, expected):
    value = clip_coefficient(torch.tensor(norm), torch.tensor(threshold), max_norm).item()
    assert value == pytest.approx(expected)


def test_scale_gradients_handles_mixed_dtypes_and_none():
    grads = [torch.ones(3), None, torch.ones(2, dtype=torch.float16)]
    scale_gradients_(grads, torch.tensor(0.5, dtype=torch.float64))
    assert grads[0].tolist() == [0.5] * 3 and grads[2].dtype == torch.float16 and grads[2].tolist() == [0.5] * 2


sequences = st.lists(st.one_of(st.floats(0, 1e30), st.just(math.nan), st.just(math.inf)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(sequences, st.floats(0.1, 100), st.integers(1, 20))
def test_percentile_threshold_in_range_on_any_sequence(norms, percentile, window):
    rule = PercentileThreshold(percentile, window=window)
    for norm in norms:
        threshold = rule.update(torch.tensor(norm)).item()
        assert threshold >= 0 and not math.isnan(threshold)
        coefficient = clip_coefficient(torch.tensor(norm), torch.tensor(threshold)).item()
        assert 0.0 <= coefficient <= 1.0


@settings(max_examples=150, deadline=None)
@given(sequences, st.floats(0.5, 5.0), st.integers(0, 10))
def test_zscore_threshold_in_range_on_any_sequence(norms, z_thresh, warmup):
    rule = ZScoreThreshold(z_thresh=z_thresh, warmup_steps=warmup)
    for norm in norms:
        threshold = rule.update(torch.tensor(norm)).item()
        assert not math.isnan(threshold) and threshold >= 0
        if math.isfinite(threshold) and math.isfinite(norm):
            assert threshold <= norm  # a clip only ever lowers the norm
