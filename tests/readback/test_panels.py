"""Panels are made from the tags that exist, and only from them."""

import math

import pytest

from lightning_convergence.readback.panels import (
    clipping_panel,
    dead_units_panel,
    gradient_panel,
    learning_rate_panel,
    loss_panel,
    select_panels,
)

S = [(0, 1.0), (5, 0.5)]


def _labels(panel):
    return [line.label for line in panel.lines]


def test_no_data_no_panels():
    assert select_panels({}) == []
    assert select_panels({"epoch": S, "val_acc": S}) == []


def test_loss_panel_takes_user_losses_and_the_suites_ema_with_markers():
    panel = loss_panel({"train_loss": S, "val_loss": S, "val_acc": S, "convergence/loss/train_ema": S,
                        "convergence/loss/best_ema": S, "convergence/loss/val_loss": S})
    assert _labels(panel) == ["train_loss", "val_loss", "train loss EMA (suite)"]
    assert panel.markers and not panel.log_y


@pytest.mark.parametrize("values, log_y", [
    ([2.3, 0.01], True), ([2.3, 0.5], False), ([2.3, 0.0], False), ([2.3, math.nan, 0.001], True)])
def test_loss_goes_log_only_over_wide_positive_ranges(values, log_y):
    assert loss_panel({"loss": list(enumerate(values))}).log_y is log_y


def test_gradient_panel_puts_the_total_last_and_bold():
    panel = gradient_panel({"convergence/grad_norm/total": S, "convergence/grad_norm/net.0": S,
                            "convergence/grad_norm/net.2": S, "convergence/grad_max_abs/total": S})
    assert _labels(panel) == ["net.0", "net.2", "total"] and panel.lines[-1].bold and panel.log_y


def test_dead_units_panel_is_the_dead_fraction_per_layer():
    panel = dead_units_panel({"convergence/dead_fraction/net.1": S, "convergence/dormant_fraction/net.1": S})
    assert _labels(panel) == ["net.1"]
    assert dead_units_panel({"convergence/dormant_fraction/net.1": S}) is None


def test_clipping_panel():
    panel = clipping_panel({"convergence/autoclip/norm": S, "convergence/autoclip/threshold": S,
                            "convergence/autoclip/clipped_norm": S, "convergence/autoclip/clipped_fraction": S})
    assert _labels(panel) == ["pre-clip norm", "post-clip norm", "clip threshold"]
    assert clipping_panel({"convergence/autoclip/clipped_fraction": S}) is None


def test_learning_rate_panel_factors_left_effective_right():
    panel = learning_rate_panel({"convergence/lr_factor": S, "convergence/lr_factor/plateau_advisor": S,
                                 "convergence/lr/group0": S, "lr-SGD": S})
    assert _labels(panel) == ["lr_factor", "lr_factor/plateau_advisor"]
    assert [line.label for line in panel.right] == ["group0", "lr-SGD"]
    only_lr = learning_rate_panel({"lr-Adam": S})
    assert _labels(only_lr) == ["lr-Adam"] and only_lr.log_y and not only_lr.right


def test_real_run_panels(watched_run, unwatched_run):
    from lightning_convergence.readback import read_scalars

    assert [p.title for p in select_panels(read_scalars(str(watched_run)))] == [
        "loss", "gradient norm", "clipping", "learning rate"]
    assert [p.title for p in select_panels(read_scalars(str(unwatched_run)))] == ["loss"]
