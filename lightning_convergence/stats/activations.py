"""Per-unit activity of an activation's output, accumulated over a window of batches on the device.

A *unit* is one channel of a convolution's output or one feature of a linear or sequence output.
Over a window of sampled training batches the accumulator keeps, per unit, as declared slots of a
:class:`~lightning_convergence.stats.window.DeviceWindow`:

- ``peak``: the largest output seen (a unit whose peak never exceeded 0 is *dead*);
- ``abs_sum``: the sum of |output| (its mean over the window gives ReDo's dormancy score);
- ``saturated``: how many outputs sat within ``eps`` of a sigmoid's or tanh's flat ends.

For activations whose output is never negative (ReLU, ReLU6) the sum of the outputs is both the
dormancy sum and the dead test (a sum of non-negative values is 0 exactly when none is positive),
so one reduction per batch serves both. Signed activations (LeakyReLU, PReLU, ELU, GELU, SiLU)
take a max and a sum; sigmoid and tanh a sum and a count (and the number of outputs per unit,
the denominator of their saturation). Nothing here reads a value on the host.

References:
    Sokar, Agarwal, Castro, Evci. "The Dormant Neuron Phenomenon in Deep Reinforcement
    Learning", ICML 2023 (ReDo): a unit is tau-dormant when its mean |activation| divided by the
    layer's average is at most tau.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_convergence.stats.window import DeviceWindow, Reduction, Value

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


def _saturated(x: Tensor, kind: ActivationKind, eps: float) -> Tensor:
    """Where a sigmoid's or tanh's output is within ``eps`` of a flat end."""
    centre, half_width = (0.5, 0.5) if kind == "sigmoid" else (0.0, 1.0)
    return (x - centre).abs() >= half_width - eps


def _unit_values(x: Tensor, kind: ActivationKind, eps: float) -> dict[str, Tensor]:
    """:func:`unit_batch_stats` of an output with one value per unit (nothing to reduce)."""
    stats = {"abs_sum": x.abs().to(torch.float32).reshape(-1)}
    if kind == "signed":
        stats["peak"] = x.to(torch.float32, copy=True).reshape(-1)
    if kind in CAN_SATURATE:
        stats["saturated"] = _saturated(x, kind, eps).to(torch.float32).reshape(-1)
        stats["values"] = torch.ones((), dtype=torch.float64, device=x.device)
    return stats


@dataclass
class UnitActivity:
    """What one window says about the units of one activation site (tensors on the device)."""

    peak: Tensor  # [units] > 0 exactly when some output was > 0
    abs_sum: Tensor  # [units] sum of |output|
    saturated: Tensor  # [units] outputs within eps of a flat end
    values_per_unit: Tensor | None  # () outputs seen per unit; kept only where saturation is measured
    batches: int


def unit_slots(kind: ActivationKind) -> dict[str, Reduction]:
    """The per-unit statistics an activation of ``kind`` needs, and how windows and ranks merge
    them. Non-negative outputs need one sum only: it is 0 exactly when no output was positive.

    Example:
        >>> unit_slots("nonnegative"), unit_slots("signed")
        ({'abs_sum': 'sum'}, {'abs_sum': 'sum', 'peak': 'max'})
    """
    slots: dict[str, Reduction] = {"abs_sum": "sum"}
    if kind == "signed":
        slots["peak"] = "max"
    if kind in CAN_SATURATE:
        slots["saturated"] = "sum"
        slots["values"] = "sum"  # a scalar: outputs per unit, the denominator of the saturation
    return slots


def unit_batch_stats(output: Tensor, dim: int, kind: ActivationKind, eps: float = 0.01) -> dict[str, Tensor]:
    """One batch's contribution to each of :func:`unit_slots` (one or two reductions, no host sync).

    Works on ``output.detach()``: nothing is recorded for autograd (no ``no_grad`` context needed,
    which would cost more than the reduction on small outputs).

    Example:
        >>> unit_batch_stats(torch.tensor([[1.0, -2.0], [3.0, -1.0]]), dim=1, kind="signed")["peak"].tolist()
        [3.0, -1.0]
    """
    x = output.detach()
    dims = _other_dims(x, dim)
    if not dims:  # a 1-d (or 0-d) output: each value is its own unit, seen once (a reduction over
        # no dimension would be over all of them); a copy, as the activation may change in place
        return _unit_values(x, kind, eps)
    if kind == "nonnegative":
        return {"abs_sum": x.sum(dim=dims, dtype=torch.float32)}  # [units]; > 0 exactly when some output > 0
    stats = {"abs_sum": x.abs().sum(dim=dims, dtype=torch.float32)}
    if kind == "signed":
        stats["peak"] = x.amax(dim=dims).float()
    if kind in CAN_SATURATE:
        stats["saturated"] = _saturated(x, kind, eps).sum(dim=dims, dtype=torch.float32)
        units = x.shape[dim] if x.dim() else 1
        # float64: a count that float32 would round past 2**24 outputs.
        stats["values"] = torch.full((), x.numel() // max(units, 1), dtype=torch.float64, device=x.device)
    return stats


class UnitAccumulator:
    """Accumulates :class:`UnitActivity` for one activation site in a :class:`DeviceWindow`.

    The site's statistics are slots ``f"{prefix}{stat}"`` of ``window`` (one of its own when
    none is given), declared at the first batch, when the unit count is known. Several sites
    sharing one window are read, reduced across ranks and checkpointed together, by name.

    Args:
        kind: the activation's :data:`ActivationKind`.
        dim: the unit dimension of the outputs.
        eps: distance from a flat end (0 and 1 for sigmoid, -1 and 1 for tanh) that counts as
            saturated.
        window: the window holding the slots.
        prefix: the start of the slot names (``"features.1/"``).

    Raises:
        ValueError: from :meth:`update`, when the unit count differs from the first batch's.

    Example:
        >>> acc = UnitAccumulator("nonnegative", dim=1)
        >>> acc.update(torch.relu(torch.tensor([[1.0, -2.0], [3.0, -1.0]])))
        >>> acc.activity().peak.tolist(), acc.activity().abs_sum.tolist()
        ([4.0, 0.0], [4.0, 0.0])
    """

    def __init__(self, kind: ActivationKind, dim: int, eps: float = 0.01, window: DeviceWindow | None = None,
                 prefix: str = "") -> None:
        self.kind = kind
        self.dim = dim
        self.eps = eps
        self.window = DeviceWindow() if window is None else window
        self.prefix = prefix
        self.units: int | None = None
        self.batches = 0  # host count: the same on every rank (sampling follows the optimizer step)

    def slot(self, stat: str) -> str:
        return f"{self.prefix}{stat}"

    def declare(self, units: int) -> None:
        """Declare the site's slots for ``units`` units (done by the first :meth:`update`)."""
        self.units = units
        for stat, reduce in unit_slots(self.kind).items():
            self.window.declare(self.slot(stat), () if stat == "values" else units, reduce)

    def update(self, output: Tensor) -> None:
        """Add one batch of outputs (one or two reductions and merges, no host sync)."""
        self.window.update(**self.batch_slots(output))

    def batch_slots(self, output: Tensor) -> dict[str, Tensor]:
        """One batch's statistics keyed by slot name, counted as a batch of the window but not
        merged yet: the caller merges them, with other sites' of the same window, in one
        ``window.update`` (a merge per site cost more than the reduction on small outputs).

        Raises:
            ValueError: the unit count differs from the first batch's.
        """
        units = output.shape[self.dim] if output.dim() else 1
        if self.units is None:
            self.declare(units)
        elif units != self.units:
            raise ValueError(f"the activation's unit count changed from {self.units} to {units}.")
        stats = unit_batch_stats(output, self.dim, self.kind, self.eps)
        self.batches += 1
        return {self.slot(stat): value for stat, value in stats.items()}

    def reset(self) -> None:
        """Start a new window: the batch count to 0 and the slots to their identity."""
        self.batches = 0
        if self.units is not None and self.window.allocated:
            for stat, reduce in unit_slots(self.kind).items():
                self.window[self.slot(stat)].fill_(-math.inf if reduce == "max" else 0.0)

    def activity(self) -> UnitActivity:
        """The window so far, as views of the window. ``peak`` is positive exactly when some
        output was; for non-negative kinds it is the sum itself, and kinds without a dead test
        report ``+inf``."""
        if self.units is None or not self.window.allocated:
            zeros = torch.zeros(self.units or 0, dtype=self.window.dtype)
            views = {stat: zeros if stat != "values" else zeros.new_zeros(()) for stat in unit_slots(self.kind)}
            views["peak"] = zeros if self.kind == "nonnegative" else zeros - math.inf
        else:
            views = {stat: self.window[self.slot(stat)] for stat in unit_slots(self.kind)}
        return _activity(self.kind, views, self.batches)

    def host_lists(self, values: Mapping[str, Value]) -> tuple[list[float], list[float], list[float], float]:
        """The site's part of ``window.read()`` as plain lists: ``(peak, abs_sum, saturated,
        outputs per unit)``, the same numbers as :meth:`host` without a tensor made per statistic
        (a window judgment reads every site of the model: 100 sites of an MLP).

        Example:
            >>> acc = UnitAccumulator("nonnegative", dim=1)
            >>> acc.update(torch.relu(torch.tensor([[1.0, -2.0], [3.0, -1.0]])))
            >>> acc.host_lists(acc.window.read())
            ([4.0, 0.0], [4.0, 0.0], [0.0, 0.0], 0.0)
        """
        abs_sum = list(values[self.slot("abs_sum")])  # floats already (a window's read is ``tolist``)
        units = len(abs_sum)
        if self.kind == "nonnegative":
            peak = abs_sum
        elif self.kind == "signed":
            peak = list(values[self.slot("peak")])
        else:
            peak = [math.inf] * units
        if self.kind in CAN_SATURATE:
            return peak, abs_sum, list(values[self.slot("saturated")]), float(values[self.slot("values")])
        return peak, abs_sum, [0.0] * units, 0.0

    def host(self, values: Mapping[str, Value]) -> UnitActivity:
        """The site's part of ``window.read()`` (host numbers) as a :class:`UnitActivity` of
        CPU float64 tensors."""
        views = {stat: torch.tensor(values[self.slot(stat)], dtype=torch.float64) for stat in unit_slots(self.kind)}
        return _activity(self.kind, views, self.batches)


def _activity(kind: ActivationKind, views: dict[str, Tensor], batches: int) -> UnitActivity:
    abs_sum = views["abs_sum"]
    if kind == "nonnegative":
        peak = abs_sum
    else:
        peak = views.get("peak", torch.full_like(abs_sum, math.inf))
    saturated = views.get("saturated", torch.zeros_like(abs_sum))
    return UnitActivity(peak, abs_sum, saturated, views.get("values"), batches)


def dormant_mask(abs_sum: Tensor, tau: float) -> Tensor:
    """ReDo's tau-dormant units: mean |activation| over the layer's average, at most ``tau``.

    A layer whose every unit is silent is all dormant (the ratio is 0/0 there); a layer whose
    mean is NaN has no dormant unit (nothing can be said of it).

    Example:
        >>> dormant_mask(torch.tensor([10.0, 10.0, 0.5, 0.0]), tau=0.1).tolist()
        [False, False, True, True]
    """
    if abs_sum.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=abs_sum.device)
    mean = abs_sum.mean()
    return torch.where(mean > 0, abs_sum / mean.clamp_min(torch.finfo(abs_sum.dtype).tiny) <= tau, mean <= 0)


def dormant_units(abs_sum: Sequence[float], tau: float) -> list[bool]:
    """:func:`dormant_mask` on host numbers (a window's read), element for element the same.

    Example:
        >>> dormant_units([10.0, 10.0, 0.5, 0.0], tau=0.1)
        [False, False, True, True]
    """
    if not abs_sum:
        return []
    mean = sum(abs_sum) / len(abs_sum)
    if mean > 0:
        return [value / mean <= tau for value in abs_sum]
    return [mean <= 0] * len(abs_sum)  # a silent layer is all dormant; a NaN one says nothing


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
