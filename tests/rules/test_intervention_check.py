"""The do-no-harm verdict (`rules.intervention_check`), fed numbers: no Trainer.

A remedy is harmful when the smoothed loss after it is worse than before by more than the
relative margin (10%) and by more than NOISE_MULTIPLE standard deviations of the difference of
two smoothed losses (the smaller of the noise when it acted and now), or when it is not finite.
"""

import math
import random

import pytest

from lightning_convergence.rules.intervention_check import InterventionCheck, difference_noise
from lightning_convergence.rules.loss_regime import LossRegimeRule


@pytest.mark.parametrize("before, after, sigma, harmed", [
    (2.0, 2.5, 0.0, True),  # 25% worse, no noise
    (2.0, 2.1, 0.0, False),  # 5% worse: within the margin
    (0.21, 0.233, 0.075, False),  # 11% worse, but within the noise of noisy batches (2 x 0.024)
    (0.21, 0.40, 0.075, True),  # far beyond both
    (0.21, 0.233, 0.006, True),  # the same rise with quiet batches: harm
    (1.0, math.nan, 0.6, True),  # non-finite: harm, whatever the noise
    (1.0, math.inf, 0.0, True),
    (1.0, 0.5, 0.1, False),  # better
])
def test_harm_needs_the_margin_and_the_noise(before, after, sigma, harmed):
    check = InterventionCheck()
    check.open("learning_rate_too_high", step=10, loss_before=before, factor=0.1)
    verdict = check.judge(after, step=20, min_steps=10, noise=difference_noise(sigma, beta=0.9))
    assert verdict.harmed is harmed
    assert check.allowed("learning_rate_too_high") is not harmed


def test_difference_noise_matches_two_simulated_smoothed_losses():
    """Two independent EMAs (beta 0.9) of normal batch losses: the spread of their difference is
    what ``difference_noise`` gives from the batches' mean absolute deviation."""
    rng = random.Random(0)
    beta, sigma, diffs = 0.9, 0.3, []
    for _ in range(3000):
        emas = []
        for _ in range(2):
            ema = 0.0
            for _ in range(100):  # long enough to forget the start
                ema = beta * ema + (1 - beta) * rng.gauss(0.0, sigma)
            emas.append(ema)
        diffs.append(emas[0] - emas[1])
    measured = math.sqrt(sum(d * d for d in diffs) / len(diffs))
    assert difference_noise(sigma, beta) == pytest.approx(measured, rel=0.05)


def test_a_remedy_that_asked_to_wait_is_judged_at_once_when_the_run_diverged():
    check = InterventionCheck()
    check.open("learning_rate_too_high", step=100, loss_before=1.0, factor=0.1)
    check.wait(40)
    assert check.judge(1.5, step=110, min_steps=10) is None
    assert check.judge(5.0, step=110, min_steps=10, at_once=True).harmed
    check.open("plateau", step=200, loss_before=1.0, factor=0.1)
    assert check.judge(5.0, step=205, min_steps=10, at_once=True) is None  # its window is not over yet



def _regime_after(losses):
    rule = LossRegimeRule()
    rule.evaluate(list(range(150)), losses[:150])
    rule.evaluate(list(range(150, len(losses))), losses[150:])
    return rule


@pytest.mark.parametrize("sigma", [0.05, 0.3])
def test_the_loss_regime_estimates_the_batch_noise_and_a_spike_barely_moves_it(sigma):
    """What PlateauAdvisor hands the verdict: ``LossRegimeRule.batch_sigma`` (from the median
    distance between successive batch losses over the last 100 steps) over normal batch losses
    around a slowly falling trend is, averaged over 30 seeds, within 8% of their standard
    deviation; one batch 50x the loss moves it by less than 5%."""
    estimates = []
    for seed in range(30):
        rng = random.Random(seed)
        losses = [2.0 - 0.001 * i + rng.gauss(0.0, sigma) for i in range(200)]
        estimates.append(_regime_after(losses).batch_sigma)
        if seed == 0:
            spiked = _regime_after(losses[:175] + [100.0] + losses[176:]).batch_sigma
            assert spiked == pytest.approx(estimates[0], rel=0.05)
    assert sum(estimates) / len(estimates) == pytest.approx(sigma, rel=0.08)


def test_the_noise_when_the_remedy_acted_caps_the_noise_at_the_verdict():
    """A remedy that makes the loss noisier does not raise its own bar: the smaller noise counts."""
    check = InterventionCheck()
    check.open("learning_rate_too_low", step=10, loss_before=1.0, factor=5.0, noise=0.01)
    verdict = check.judge(1.3, step=20, noise=0.5)  # noisy after the raise: 2 x 0.5 would excuse 0.3
    assert verdict.harmed and verdict.evidence()["rise_needed"] == pytest.approx(0.1)
