"""The do-no-harm verdict (`rules.intervention_check`), fed numbers: no Trainer.

A remedy is harmful when the smoothed loss after it is worse than before by more than the
relative margin (10%) and by more than NOISE_MULTIPLE standard deviations of the difference of
two smoothed losses, or when it is not finite.
"""

import math
import random

import pytest

from lightning_convergence.rules.intervention_check import InterventionCheck, difference_noise


@pytest.mark.parametrize("before, after, mad, harmed", [
    (2.0, 2.5, 0.0, True),  # 25% worse, no noise
    (2.0, 2.1, 0.0, False),  # 5% worse: within the margin
    (0.21, 0.233, 0.06, False),  # 11% worse, but within the noise of noisy batches (0.049)
    (0.21, 0.40, 0.06, True),  # far beyond both
    (0.21, 0.233, 0.005, True),  # the same rise with quiet batches: harm
    (1.0, math.nan, 0.5, True),  # non-finite: harm, whatever the noise
    (1.0, math.inf, 0.0, True),
    (1.0, 0.5, 0.1, False),  # better
])
def test_harm_needs_the_margin_and_the_noise(before, after, mad, harmed):
    check = InterventionCheck()
    check.open("learning_rate_too_high", step=10, loss_before=before, factor=0.1)
    verdict = check.judge(after, step=20, min_steps=10, noise=difference_noise(mad, beta=0.9))
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
    assert difference_noise(sigma * math.sqrt(2 / math.pi), beta) == pytest.approx(measured, rel=0.05)


def test_a_remedy_that_asked_to_wait_is_judged_at_once_when_the_run_diverged():
    check = InterventionCheck()
    check.open("learning_rate_too_high", step=100, loss_before=1.0, factor=0.1)
    check.wait(40)
    assert check.judge(1.5, step=110, min_steps=10) is None
    assert check.judge(5.0, step=110, min_steps=10, at_once=True).harmed
    check.open("plateau", step=200, loss_before=1.0, factor=0.1)
    assert check.judge(5.0, step=205, min_steps=10, at_once=True) is None  # its window is not over yet

