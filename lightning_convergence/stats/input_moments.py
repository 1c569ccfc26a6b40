"""What one part of the training batches looks like, accumulated on the device.

For floating tensors, on sampled batches: per-channel sums of values and squares (the channel is
dimension 1 of 2-d and higher tensors: images ``[N, C, H, W]``, sequences ``[N, C, L]``, tables
``[N, F]``; 1-d and 0-d tensors are one channel); on every batch (:class:`NonfiniteCounter`): the
number of NaN/Inf values and the first step that had any. For integer tensors: the smallest and
largest value. Nothing is read on the host here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def channel_dim(x: Tensor) -> int | None:
    """The channel dimension of a batch tensor, ``None`` for one channel.

    Example:
        >>> channel_dim(torch.zeros(8, 3, 32, 32)), channel_dim(torch.zeros(8, 20)), channel_dim(torch.zeros(8))
        (1, 1, None)
    """
    return 1 if x.dim() >= 2 else None


class InputMoments:
    """Accumulates one batch part over sampled batches.

    Example:
        >>> acc = InputMoments()
        >>> acc.update(torch.tensor([[0.0, 255.0], [2.0, 255.0]]))
        >>> mean, rms = acc.summary()
        >>> mean.tolist(), rms.tolist()
        ([1.0, 255.0], [1.4142135381698608, 255.0])
    """

    def __init__(self) -> None:
        self.floating: bool | None = None
        self.channels: int | None = None
        self.count = 0  # values per channel (host-side, from shapes)
        self.batches = 0
        self._sum: Tensor | None = None
        self._sumsq: Tensor | None = None
        self._min: Tensor | None = None
        self._max: Tensor | None = None

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Add one batch part (two reductions for floating parts, two for integer ones)."""
        x = x.detach()
        if x.layout != torch.strided or x.is_complex():
            return
        floating = x.is_floating_point()
        dim = channel_dim(x)
        channels = x.shape[dim] if dim is not None else 1
        if self.floating is None:
            self.floating, self.channels = floating, channels
        if floating != self.floating or channels != self.channels or x.numel() == 0:
            return  # a batch part whose layout changed between batches: not comparable
        self.batches += 1
        if not floating:
            low, high = (x.min(), x.max()) if x.numel() else (None, None)
            self._min = low if self._min is None else torch.minimum(self._min, low)
            self._max = high if self._max is None else torch.maximum(self._max, high)
            return
        dims = tuple(d for d in range(x.dim()) if d != dim)
        values = x.float()
        total = (values.sum(dim=dims) if dims else values).reshape(-1)  # [channels]
        squares = ((values * values).sum(dim=dims) if dims else values * values).reshape(-1)
        self._sum = total if self._sum is None else self._sum.add_(total)
        self._sumsq = squares if self._sumsq is None else self._sumsq.add_(squares)
        self.count += x.numel() // channels

    def summary(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and root mean square (floating parts)."""
        mean = self._sum / max(self.count, 1)
        rms = (self._sumsq / max(self.count, 1)).sqrt()
        return mean, rms

    def value_range(self) -> tuple[Tensor, Tensor]:
        """Smallest and largest value (integer parts)."""
        return self._min, self._max

    def reset(self) -> None:
        floating, channels = self.floating, self.channels
        self.__init__()
        self.floating, self.channels = floating, channels


class NonfiniteCounter:
    """NaN/Inf values in one floating batch part on every batch, and the first step with any.

    Example:
        >>> counter = NonfiniteCounter()
        >>> _ = counter.update(torch.ones(3), step=0)
        >>> _ = counter.update(torch.tensor([1.0, float("nan")]), step=4)
        >>> [int(v) for v in counter.read()]
        [1, 4]
    """

    def __init__(self) -> None:
        self._count: Tensor | None = None
        self._first: Tensor | None = None

    @torch.no_grad()
    def update(self, x: Tensor, step: int) -> Tensor:
        """Count this batch's NaN/Inf (one reduction, no host read); returns the count."""
        count = x.numel() - torch.isfinite(x.detach()).sum()
        if self._count is None:
            self._count = torch.zeros_like(count)
            self._first = torch.full_like(count, -1)
        self._first = torch.where((self._first < 0) & (count > 0), torch.full_like(count, step), self._first)
        self._count = self._count + count
        return count

    def read(self) -> Tensor:
        """``[count, first step or -1]`` (device)."""
        if self._count is None:
            return torch.tensor([0, -1])
        return torch.stack([self._count, self._first])

    def reset(self) -> None:
        self._count = self._first = None
