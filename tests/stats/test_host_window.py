"""HostWindow against DeviceWindow: the same declared statistics, merged on Python floats."""

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.stats.host import cpu_floats, cpu_scalar, on_host_path
from lightning_convergence.stats.host_window import HostWindow
from lightning_convergence.stats.window import REDUCTIONS, DeviceWindow

value = st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf), st.just(-math.inf))


def _declare(window):
    window.declare("count", 2, "sum")
    window.declare("low", (), "min")
    window.declare("peak", 2, "max")
    window.declare("first_bad", (), "first")
    window.declare("steps", (), "sum")
    return window


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(value, value, value, value, value), min_size=0, max_size=12))
def test_host_window_merges_as_the_device_window(rows):
    """Every reduction kind, NaN and +-Inf included, gives the device window's values bit for bit."""
    host, device = _declare(HostWindow()), _declare(DeviceWindow())
    device.allocate("cpu")
    for a, b, c, d, e in rows:
        host.update(count=[a, b], low=c, peak=[d, e], first_bad=a, steps=1.0)
        device.update(count=torch.tensor([a, b], dtype=torch.float64), low=torch.tensor(c, dtype=torch.float64),
                      peak=torch.tensor([d, e], dtype=torch.float64), first_bad=torch.tensor(a, dtype=torch.float64),
                      steps=torch.tensor(1.0))
    got, want = host.read(), device.read()
    assert got.keys() == want.keys()
    for name in want:
        assert _same(got[name], want[name]), name


def test_set_write_reset_late_declaration_and_extra():
    window = HostWindow()
    window.declare("trace", 3, "max")
    window.update(trace=[1.0, 2.0, 3.0])
    window.write("trace", 1, 7.0)
    window.declare("ema", (), "first")  # declared after the values exist: earlier values kept
    window.set(ema=0.5)
    assert window["trace"] == [1.0, 7.0, 3.0] and window["ema"] == 0.5
    out = window.read(extra={"last": torch.tensor([4.0, 5.0]), "flag": torch.tensor(1.0)})
    assert out["last"] == [4.0, 5.0] and out["flag"] == 1.0
    window.reset()
    assert window["trace"] == [-math.inf] * 3 and math.isnan(window["ema"])
    with pytest.raises(KeyError, match="never declared"):
        window.update(missing=1.0)


def test_checkpoints_cross_between_host_and_device_windows():
    """A host window's checkpoint loads into a device window (with ``weights_only=True``) and back."""
    host = _declare(HostWindow())
    host.update(count=[1.0, 2.0], low=3.0, peak=[4.0, math.nan], first_bad=5.0, steps=1.0)
    buffer = io.BytesIO()
    torch.save(host.state_dict(), buffer)
    buffer.seek(0)
    device = _declare(DeviceWindow())
    device.load_state_dict(torch.load(buffer, weights_only=True), "cpu")
    assert all(_same(device.read()[k], v) for k, v in host.read().items())
    again = HostWindow.like(device)
    assert [s for s in again.slots] == [s for s in device.slots]
    assert all(_same(again.read()[k], v) for k, v in device.read().items())


def test_reduce_across_goes_through_one_collective_per_kind():
    window = _declare(HostWindow())
    window.update(count=[1.0, 2.0], low=3.0, peak=[math.nan, 1.0], steps=1.0)
    ops = []

    def all_reduce(tensor, op):
        ops.append(op)
        return tensor * 2 if op == "sum" else tensor

    window.reduce_across(all_reduce)
    assert ops == ["sum", "min", "max", "min"]
    out = window.read()
    assert out["count"] == [2.0, 4.0] and out["steps"] == 2.0 and out["peak"] == [math.inf, 1.0]


def test_host_reads_refuse_other_devices_and_the_switch():
    meta = torch.empty(2, device="meta")
    with pytest.raises(ValueError, match="cpu_floats"):
        cpu_floats(meta)
    with pytest.raises(ValueError, match="cpu_scalar"):
        cpu_scalar(meta[0])
    assert on_host_path(torch.zeros(1)) and not on_host_path(meta)
    assert set(REDUCTIONS) == {"sum", "min", "max", "first"}  # the kinds both windows merge
