"""StepSeries: per-step scalars on the device, read once per window."""

import io

import torch

from lightning_convergence.stats.step_series import StepSeries


def test_take_returns_the_window_in_order_and_clears():
    series = StepSeries()
    for step in range(5):
        series.append(step // 2, torch.tensor([float(step)]))  # two batches per step, shape (1,)
    assert series.take() == ([0, 0, 1, 1, 2], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert len(series) == 0 and series.take() == ([], [])


def test_reduce_is_applied_before_the_read():
    series = StepSeries()
    series.append(0, torch.tensor(2.0))
    series.append(1, torch.tensor(4.0))
    seen = []

    def halve(values):
        seen.append(values.shape)
        return values / 2

    assert series.take(halve) == ([0, 1], [1.0, 2.0])
    assert seen == [torch.Size([2])]


def test_values_are_detached_floats():
    weight = torch.tensor(3.0, requires_grad=True)
    series = StepSeries()
    series.append(0, (weight * 2).half())
    values = series.state_dict()["values"]
    assert not values.requires_grad and values.dtype == torch.float32


def test_weights_only_round_trip():
    series = StepSeries()
    series.append(3, torch.tensor(1.5))
    series.append(4, torch.tensor(float("nan")))
    buffer = io.BytesIO()
    torch.save(series.state_dict(), buffer)
    buffer.seek(0)
    restored = StepSeries()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    steps, values = restored.take()
    assert steps == [3, 4] and values[0] == 1.5 and values[1] != values[1]
    empty = StepSeries()
    empty.load_state_dict(StepSeries().state_dict())
    assert len(empty) == 0


def test_peek_reads_without_clearing():
    series = StepSeries()
    series.append(0, torch.tensor(2.0))
    assert series.peek() == ([0], [2.0]) and len(series) == 1
    assert series.take() == ([0], [2.0]) and len(series) == 0
