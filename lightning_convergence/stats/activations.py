"""Per-unit activity of an activation's output, accumulated over a window of batches on the device.

A *unit* is one channel of a convolution's output or one feature of a linear or sequence output.
Over a window of sampled training batches the accumulator keeps, per unit:

- ``peak``: the largest output seen (a unit whose peak never exceeded 0 is *dead*);
- ``abs_sum``: the sum of |output| (its mean over the window gives ReDo's dormancy score);
- ``saturated``: how many outputs sat within ``eps`` of a sigmoid's or tanh's flat ends.

For activations whose output is never negative (ReLU, ReLU6) the sum of the outputs is both the
dormancy sum and the dead test (a sum of non-negative values is 0 exactly when none is positive),
so one reduction per batch serves both. Signed activations (LeakyReLU, PReLU, ELU, GELU, SiLU)
take a max and a sum; sigmoid and tanh a sum and a count. Nothing here reads a value on the host.

References:
    Sokar, Agarwal, Castro, Evci. "The Dormant Neuron Phenomenon in Deep Reinforcement
    Learning", ICML 2023 (ReDo): a unit is tau-dormant when its mean |activation| divided by the
    layer's average is at most tau.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

ActivationKind = Literal["nonnegative", "signed", "positive", "sigmoid", "tanh"]

# What each activation module's output looks like, which decides what can be measured on it.
# "positive" (Softplus) is never <= 0: "dead" has no meaning there, dormancy does.
ACTIVATION_KINDS: dict[type[nn.Module], ActivationKind] = {
    nn.ReLU: "nonnegative",
    nn.ReLU6: "nonnegative",
    nn.LeakyReLU: "signed",
    nn.PReLU: "signed",
    nn.ELU: "signed",
    nn.GELU: "signed",
    nn.SiLU: "signed",
    nn.Softplus: "positive",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
}

CAN_DIE: tuple[ActivationKind, ...] = ("nonnegative", "signed")
CAN_SATURATE: tuple[ActivationKind, ...] = ("sigmoid", "tanh")


def activation_kind(module: nn.Module) -> ActivationKind | None:
    """The kind of an activation module, or ``None`` for any other module.

    Example:
        >>> activation_kind(nn.ReLU(inplace=True)), activation_kind(nn.Linear(2, 2))
        ('nonnegative', None)
    """
    for cls, kind in ACTIVATION_KINDS.items():
        if isinstance(module, cls):
            return kind
    return None


def unit_dim(output: Tensor, after_conv: bool) -> int:
    """The unit dimension of an activation output: the channel dimension (1) after a
    convolution, else the last dimension (linear and sequence outputs). A 1-d output is one
    unit per element.

    Example:
        >>> unit_dim(torch.zeros(8, 16, 5, 5), after_conv=True), unit_dim(torch.zeros(8, 7, 32), after_conv=False)
        (1, 2)
    """
    if output.dim() <= 1:
        return 0
    return 1 if after_conv else output.dim() - 1


def _other_dims(x: Tensor, dim: int) -> tuple[int, ...]:
    return tuple(d for d in range(x.dim()) if d != dim)


@dataclass
class UnitActivity:
    """What one window says about the units of one activation site (tensors on the device)."""

    peak: Tensor  # [units] > 0 exactly when some output was > 0
    abs_sum: Tensor  # [units] sum of |output|
    saturated: Tensor  # [units] outputs within eps of a flat end
    values_per_unit: int  # outputs seen per unit (host-side count from shapes)
    batches: int


class UnitAccumulator:
    """Accumulates :class:`UnitActivity` for one activation site over sampled batches.

    Args:
        kind: the activation's :data:`ActivationKind`.
        dim: the unit dimension of the outputs.
        eps: distance from a flat end (0 and 1 for sigmoid, -1 and 1 for tanh) that counts as
            saturated.

    Example:
        >>> acc = UnitAccumulator("nonnegative", dim=1)
        >>> acc.update(torch.relu(torch.tensor([[1.0, -2.0], [3.0, -1.0]])))
        >>> acc.activity().peak.tolist(), acc.activity().abs_sum.tolist()
        ([4.0, 0.0], [4.0, 0.0])
    """

    def __init__(self, kind: ActivationKind, dim: int, eps: float = 0.01) -> None:
        self.kind = kind
        self.dim = dim
        self.eps = eps
        self.units: int | None = None
        self.reset()

    def reset(self) -> None:
        self._peak: Tensor | None = None
        self._abs_sum: Tensor | None = None
        self._saturated: Tensor | None = None
        self.values_per_unit = 0
        self.batches = 0

    @torch.no_grad()
    def update(self, output: Tensor) -> None:
        """Add one batch of outputs (one or two reductions, no host sync)."""
        x = output.detach()
        dims = _other_dims(x, self.dim)
        units = x.shape[self.dim] if x.dim() else 1
        if self.units is None:
            self.units = units
        elif units != self.units:
            raise ValueError(f"the activation's unit count changed from {self.units} to {units}.")
        peak = None
        if self.kind == "nonnegative":
            abs_sum = x.sum(dim=dims, dtype=torch.float32)  # [units]; > 0 exactly when some output > 0
        else:
            abs_sum = x.abs().sum(dim=dims, dtype=torch.float32)
            peak = x.amax(dim=dims).float() if self.kind == "signed" else None
        if self.kind in CAN_SATURATE:
            centre = 0.5 if self.kind == "sigmoid" else 0.0
            half_width = 0.5 if self.kind == "sigmoid" else 1.0
            saturated = ((x - centre).abs() >= half_width - self.eps).sum(dim=dims, dtype=torch.float32)
            self._saturated = saturated if self._saturated is None else self._saturated.add_(saturated)
        self._abs_sum = abs_sum if self._abs_sum is None else self._abs_sum.add_(abs_sum)
        if peak is not None:
            self._peak = peak.clone() if self._peak is None else torch.maximum(self._peak, peak, out=self._peak)
        self.values_per_unit += x.numel() // max(units, 1)
        self.batches += 1

    def activity(self) -> UnitActivity:
        """The window so far. ``peak`` is positive exactly when some output was; for
        non-negative kinds it is the sum itself, and kinds without a dead test report ``+inf``."""
        abs_sum = self._abs_sum if self._abs_sum is not None else torch.zeros(self.units or 0)
        if self.kind == "nonnegative":
            peak = abs_sum
        elif self._peak is not None:
            peak = self._peak
        else:
            peak = torch.full_like(abs_sum, float("inf"))
        saturated = self._saturated if self._saturated is not None else torch.zeros_like(abs_sum)
        return UnitActivity(peak, abs_sum, saturated, self.values_per_unit, self.batches)


def dormant_mask(abs_sum: Tensor, tau: float) -> Tensor:
    """ReDo's tau-dormant units: mean |activation| over the layer's average, at most ``tau``.

    A layer whose every unit is silent is all dormant (the ratio is 0/0 there).

    Example:
        >>> dormant_mask(torch.tensor([10.0, 10.0, 0.5, 0.0]), tau=0.1).tolist()
        [False, False, True, True]
    """
    mean = abs_sum.mean()
    if abs_sum.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=abs_sum.device)
    return torch.where(mean > 0, abs_sum / mean.clamp_min(torch.finfo(abs_sum.dtype).tiny) <= tau,
                       torch.ones_like(abs_sum, dtype=torch.bool))


def unit_activity_reference(batches: list[Tensor], dim: int, kind: ActivationKind, eps: float = 0.01) -> dict:
    """The spec, in float64 with plain loops: per-unit peak, |x| sum and saturated count.

    Example:
        >>> ref = unit_activity_reference([torch.tensor([[0.0, 2.0]])], dim=1, kind="nonnegative")
        >>> ref["dead"]
        [True, False]
    """
    units = batches[0].shape[dim]
    peak = [float("-inf")] * units
    abs_sum = [0.0] * units
    saturated = [0] * units
    for batch in batches:
        moved = batch.detach().double().movedim(dim, -1).reshape(-1, units)
        for row in moved.tolist():
            for u, value in enumerate(row):
                peak[u] = max(peak[u], value)
                abs_sum[u] += abs(value)
                if kind == "sigmoid" and abs(value - 0.5) >= 0.5 - eps:
                    saturated[u] += 1
                if kind == "tanh" and abs(value) >= 1.0 - eps:
                    saturated[u] += 1
    dead = [p <= 0 for p in peak] if kind in CAN_DIE else [False] * units
    return {"peak": peak, "abs_sum": abs_sum, "saturated": saturated, "dead": dead}
