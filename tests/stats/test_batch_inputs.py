"""Batch walking and input accumulators against plain references."""

import math
from collections import namedtuple
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.stats.batch_tensors import batch_tensors
from lightning_convergence.stats.input_moments import InputMoments, NonfiniteCounter, channel_dim
from lightning_convergence.stats.window import DeviceWindow


def test_batch_shapes_are_walked_and_named():
    Pair = namedtuple("Pair", "x y")

    @dataclass
    class Sample:
        image: torch.Tensor
        name: str

    batch = {"a": (torch.zeros(2), [torch.ones(2), "text"]), "b": Pair(torch.zeros(1), None),
             "c": Sample(torch.zeros(3), "n"), "d": ["f1.png", "f2.png"]}
    found, skipped = batch_tensors(batch)
    assert [p for p, _ in found] == ["batch['a'][0]", "batch['a'][1][0]", "batch['b'].x", "batch['c'].image"]
    assert skipped == ["batch['a'][1][1]", "batch['c'].name", "batch['d']"]
    assert batch_tensors(torch.zeros(1))[0][0][0] == "batch"


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(5,), (4, 3), (2, 3, 4), (2, 3, 4, 5)]), batches=st.integers(1, 3),
       scale=st.sampled_from([0.01, 1.0, 255.0]), seed=st.integers(0, 100))
def test_moments_match_a_float64_reference(shape, batches, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    data = [torch.rand(shape, generator=generator) * scale for _ in range(batches)]
    acc = InputMoments()
    for x in data:
        acc.update(x)
    mean, rms = acc.summary()
    dim = channel_dim(data[0])
    flat = torch.cat([x.double().movedim(dim, -1).reshape(-1, x.shape[dim]) if dim is not None
                      else x.double().reshape(-1, 1) for x in data])
    torch.testing.assert_close(mean.double(), flat.mean(0), rtol=1e-4, atol=1e-6 * scale)
    torch.testing.assert_close(rms.double(), flat.square().mean(0).sqrt(), rtol=1e-4, atol=1e-6 * scale)


def test_integer_parts_keep_their_range_and_reset_keeps_layout():
    acc = InputMoments()
    acc.update(torch.tensor([3, 1, 4]))
    acc.update(torch.tensor([0, 9]))
    low, high = acc.value_range()
    assert (int(low), int(high)) == (0, 9)
    assert acc.value_range_of(acc.window.read()) == (0.0, 9.0)
    acc.reset()
    assert acc.batches == 0 and acc.floating is False


def test_nonfinite_counter_counts_every_batch_and_the_first_step():
    counter = NonfiniteCounter()
    counter.update(torch.ones(4), 0)
    counter.update(torch.tensor([math.nan, math.inf, 1.0]), 7)
    counter.update(torch.tensor([math.nan]), 9)
    assert counter.counts(counter.window.read()) == (3, 7)
    counter.window.reset()
    assert counter.counts(counter.window.read()) == (0, -1)


@pytest.mark.parametrize("host_path", [False, True], ids=["device-path", "host-path"])
def test_nonfinite_counter_host_path_counts_as_the_device_path(monkeypatch, host_path):
    """The host path's finite-sum shortcut gives the same counts, first steps and per-batch
    values, including a -Inf, an fp16 batch whose finite sum overflows, and an empty batch."""
    from lightning_convergence.stats import host

    monkeypatch.setattr(host, "HOST_PATH_ON_CPU", host_path)
    batches = [torch.ones(4), torch.tensor([math.nan, math.inf, 1.0]), torch.tensor([-math.inf, 2.0]),
               torch.full((8,), 60000.0, dtype=torch.float16), torch.empty(0), torch.zeros(3)]
    counter = NonfiniteCounter()
    returned = [int(counter.update(x, step)) for step, x in enumerate(batches)]
    assert returned == [0, 2, 1, 0, 0, 0]
    assert counter.counts(counter.window.read()) == (3, 1)


def test_parts_sharing_a_window_are_read_in_one_transfer_by_name():
    window = DeviceWindow()
    image, label = InputMoments(window, "batch[0]"), InputMoments(window, "batch[1]")
    counter = NonfiniteCounter(window, "batch[0]")
    x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    for step in range(3):
        image.update(x)
        counter.update(x if step < 2 else x * math.nan, step)
        label.update(torch.tensor([step, 5]))
    values = window.read()
    means, rms = image.moments(values)
    assert means == pytest.approx([2.0, 20.0]) and rms == pytest.approx([math.sqrt(5), math.sqrt(500)])
    assert label.value_range_of(values) == (0.0, 5.0)
    assert counter.counts(values) == (4, 2)
    assert image.moments(values) == tuple(t.tolist() for t in image.summary())  # device and host agree
