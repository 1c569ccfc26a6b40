"""Scalars come back as tensorboard's reader sees them, one value per step, last write wins."""

import math

from torch.utils.tensorboard import SummaryWriter

from lightning_convergence.readback import read_scalars
from tests.helpers.tensorboard import load_events, scalar_tags


def test_matches_tensorboards_reader_on_a_real_run(watched_run):
    scalars = read_scalars(str(watched_run))
    accumulator = load_events(str(watched_run))
    assert sorted(scalars) == sorted(scalar_tags(accumulator))
    for tag in ("train_loss", "convergence/grad_norm/total", "convergence/autoclip/norm"):
        expected = sorted((e.step, e.value) for e in accumulator.Scalars(tag))
        assert [(s, v) for s, v in scalars[tag]] == expected


def test_a_rerun_into_the_same_folder_keeps_the_last_value_per_step(tmp_path):
    with SummaryWriter(str(tmp_path)) as first:
        for step in range(3):
            first.add_scalar("loss", 10.0 + step, step)
    with SummaryWriter(str(tmp_path)) as second:  # a second event file in the same folder
        for step in range(2):
            second.add_scalar("loss", float(step), step)
    assert read_scalars(str(tmp_path)) == {"loss": [(0, 0.0), (1, 1.0), (2, 12.0)]}


def test_non_finite_values_are_kept(tmp_path):
    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_scalar("loss", 1.0, 0)
        writer.add_scalar("loss", float("nan"), 1)
    (first, second) = read_scalars(str(tmp_path))["loss"]
    assert first == (0, 1.0) and second[0] == 1 and math.isnan(second[1])


def test_a_folder_without_event_files_has_no_scalars(tmp_path):
    assert read_scalars(str(tmp_path)) == {}
