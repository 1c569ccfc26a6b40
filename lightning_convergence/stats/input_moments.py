"""What one part of the training batches looks like, accumulated on the device.

For floating tensors, on sampled batches: per-channel sums of values and squares (the channel is
dimension 1 of 2-d and higher tensors: images ``[N, C, H, W]``, sequences ``[N, C, L]``, tables
``[N, F]``; 1-d and 0-d tensors are one channel); on every batch (:class:`NonfiniteCounter`): the
number of NaN/Inf values and the first step that had any. ``uint8`` tensors are taken as values
(image pixels) and get the moments too. For other integer tensors: the smallest and largest
value, and the sum over batches of each batch's own span (largest - smallest: labels sorted by
class give batches of one or two classes, against most of the classes in a shuffled batch). Each part keeps its sums as declared slots of a
:class:`~lightning_convergence.stats.window.DeviceWindow` named after the part, so that every
part of every batch is read in one transfer (``window.read()``), and the numbers of one part are
found in that read by name. Nothing is read on the host here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from lightning_convergence.stats.host import cpu_scalar, on_host_path
from lightning_convergence.stats.window import DeviceWindow, Value


def channel_dim(x: Tensor) -> int | None:
    """The channel dimension of a batch tensor, ``None`` for one channel.

    Example:
        >>> channel_dim(torch.zeros(8, 3, 32, 32)), channel_dim(torch.zeros(8, 20)), channel_dim(torch.zeros(8))
        (1, 1, None)
    """
    return 1 if x.dim() >= 2 else None


class InputMoments:
    """Accumulates one batch part over sampled batches, in slots ``{name}/sum`` and
    ``{name}/sumsq`` (floating and ``uint8``, shape ``(channels,)``) or ``{name}/min``,
    ``{name}/max`` and ``{name}/batch_span_sum`` (other integers) of ``window``.

    Args:
        window: the window to declare the slots in (shared by the parts of a batch); a new one
            when ``None``.
        name: the part's name, the prefix of its slots.

    Example:
        >>> acc = InputMoments()
        >>> acc.update(torch.tensor([[0.0, 255.0], [2.0, 255.0]]))
        >>> mean, rms = acc.summary()
        >>> mean.tolist(), rms.tolist()
        ([1.0, 255.0], [1.4142135623730951, 255.0])
    """

    def __init__(self, window: DeviceWindow | None = None, name: str = "part") -> None:
        self.window = DeviceWindow() if window is None else window
        self.name = name
        self.floating: bool | None = None  # floating or uint8: values with moments
        self.channels: int | None = None
        self.count = 0  # values per channel (host-side, from shapes)
        self.batches = 0

    def _declare(self) -> None:
        if self.floating:
            self.window.declare(f"{self.name}/sum", (self.channels,), "sum")
            self.window.declare(f"{self.name}/sumsq", (self.channels,), "sum")
        else:
            self.window.declare(f"{self.name}/min", (), "min")
            self.window.declare(f"{self.name}/max", (), "max")
            self.window.declare(f"{self.name}/batch_span_sum", (), "sum")

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Add one batch part (two reductions, one merge into the window)."""
        x = x.detach()
        if x.layout != torch.strided or x.is_complex():
            return
        floating = x.is_floating_point() or x.dtype == torch.uint8  # uint8: pixels, judged as values
        dim = channel_dim(x)
        channels = x.shape[dim] if dim is not None else 1
        if self.floating is None:
            self.floating, self.channels = floating, channels
            self._declare()
        if floating != self.floating or channels != self.channels or x.numel() == 0:
            return  # a batch part whose layout changed between batches: not comparable
        self.batches += 1
        if not floating:
            low, high = x.min(), x.max()
            self.window.update(**{f"{self.name}/min": low, f"{self.name}/max": high,
                                  f"{self.name}/batch_span_sum": high - low})
            return
        dims = tuple(d for d in range(x.dim()) if d != dim)
        values = x.float()
        total = values.sum(dim=dims) if dims else values  # [channels]
        squares = (values * values).sum(dim=dims) if dims else values * values
        self.window.update(**{f"{self.name}/sum": total, f"{self.name}/sumsq": squares})
        self.count += x.numel() // channels

    def moments(self, values: Mapping[str, Value]) -> tuple[list[float], list[float]]:
        """Per-channel mean and root mean square from a ``window.read()`` (floating parts)."""
        count = max(self.count, 1)
        means = [v / count for v in values[f"{self.name}/sum"]]
        rms = [math.sqrt(v / count) if v >= 0 else math.nan for v in values[f"{self.name}/sumsq"]]
        return means, rms

    def value_range_of(self, values: Mapping[str, Value]) -> tuple[float, float]:
        """Smallest and largest value from a ``window.read()`` (integer parts)."""
        return values[f"{self.name}/min"], values[f"{self.name}/max"]

    def mean_batch_span_of(self, values: Mapping[str, Value]) -> float:
        """The mean over batches of each batch's largest - smallest value, from a
        ``window.read()`` (integer parts)."""
        return values[f"{self.name}/batch_span_sum"] / max(self.batches, 1)

    def summary(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and root mean square (floating parts), on the device."""
        count = max(self.count, 1)
        return self.window[f"{self.name}/sum"] / count, (self.window[f"{self.name}/sumsq"] / count).sqrt()

    def value_range(self) -> tuple[Tensor, Tensor]:
        """Smallest and largest value (integer parts), on the device."""
        return self.window[f"{self.name}/min"], self.window[f"{self.name}/max"]

    def reset(self) -> None:
        """Start a new window of batches (the layout is kept; the owner resets the window's
        slots with ``window.reset()``)."""
        self.count = self.batches = 0

    def state_dict(self) -> dict:
        """The host-side part (the sums are the window's, checkpointed with it)."""
        return {"floating": self.floating, "channels": self.channels, "count": self.count, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.floating, self.channels = state.get("floating"), state.get("channels")
        self.count, self.batches = int(state.get("count", 0)), int(state.get("batches", 0))
        if self.floating is not None:
            self._declare()


class NonfiniteCounter:
    """NaN/Inf values in one floating batch part on every batch, and the first step with any, in
    slots ``{name}/nonfinite`` (sum) and ``{name}/first_nonfinite`` (min; +inf while none) of
    ``window``.

    Example:
        >>> counter = NonfiniteCounter()
        >>> _ = counter.update(torch.ones(3), step=0)
        >>> _ = counter.update(torch.tensor([1.0, float("nan")]), step=4)
        >>> counter.counts(counter.window.read())
        (1, 4)
    """

    def __init__(self, window: DeviceWindow | None = None, name: str = "part") -> None:
        self.window = DeviceWindow() if window is None else window
        self.name = name
        self.window.declare(f"{name}/nonfinite", (), "sum")
        self.window.declare(f"{name}/first_nonfinite", (), "min")

    @torch.no_grad()
    def update(self, x: Tensor, step: int) -> Tensor | int:
        """Count this batch's NaN/Inf (one reduction, no host read); returns the count (0-d), or
        the int 0 on the host path for a batch without any.

        On the host path (a CPU batch) a finite sum proves there is none (a NaN or Inf anywhere
        makes the sum non-finite): one reduction without a temporary, and nothing to merge; only
        a non-finite sum (NaN/Inf, or finite values whose sum overflows) is counted exactly.
        """
        if on_host_path(x) and math.isfinite(cpu_scalar(x.detach().sum())):
            return 0
        count = x.numel() - torch.isfinite(x.detach()).sum()
        # float64, as the window: a step number stays exact
        first = torch.full((), math.inf, dtype=torch.float64, device=count.device).masked_fill(count > 0, step)
        self.window.update(**{f"{self.name}/nonfinite": count, f"{self.name}/first_nonfinite": first})
        return count

    def counts(self, values: Mapping[str, Value]) -> tuple[int, int]:
        """``(count, first step or -1)`` from a ``window.read()``."""
        first = values[f"{self.name}/first_nonfinite"]
        return int(values[f"{self.name}/nonfinite"]), int(first) if math.isfinite(first) else -1
