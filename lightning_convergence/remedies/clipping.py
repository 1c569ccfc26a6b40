"""Adaptive gradient clipping: thresholds learned from the run, applied on the device.

Measure and act are separate (as ``get_total_norm`` and ``clip_grads_with_norm_`` in
``torch.nn.utils.clip_grad``): a threshold rule turns the pre-clip global norm into a threshold,
:func:`clip_coefficient` turns both into a scale factor with ``clamp``/``where`` (no host read),
and :func:`scale_gradients_` applies it. Everything stays a 0-d tensor on the gradients' device.

References:
    Seetharaman, Wichern, Pardo, Le Roux, "AutoClip: Adaptive Gradient Clipping for Source
    Separation Networks", IEEE MLSP 2020.
    Kumar, Owen, Ashkboos, Iyer, Tulchinsky, Nguyen, "ZClip: Adaptive Spike Mitigation for LLM
    Pre-Training", 2025.
    Brock, De, Smith, Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization" (NFNets; adaptive gradient clipping), ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from lightning_convergence.stats.window import DeviceWindow

from lightning_convergence.stats.host import cpu_scalar

_NORM_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_: threshold / (norm + eps)


class PercentileThreshold:
    """AutoClip: the ``percentile``-th percentile of the recent pre-clip global norms.

    The history is a ring of the last ``window`` optimizer steps on the device; a non-finite norm
    leaves an empty (NaN) slot, so it never enters the history. The paper keeps every norm; a
    window bounds memory and the per-step sort (``torch.quantile`` also refuses more than 2**24
    values) and lets the threshold follow a run whose gradient scale drifts.

    Args:
        percentile: in (0, 100]; the paper recommends 10.
        window: how many recent steps the percentile is taken over.
        include_current: the current norm is part of the history it is clipped against (the
            paper's rule). ``False`` uses the history before it, as the ``autoclip`` package does.

    Example:
        >>> import torch
        >>> rule = PercentileThreshold(percentile=50.0, window=4)
        >>> [round(rule.update(torch.tensor(v)).item(), 2) for v in [1.0, 3.0, 2.0, 10.0]]
        [1.0, 2.0, 2.0, 2.5]
    """

    def __init__(self, percentile: float = 10.0, window: int = 1000, include_current: bool = True) -> None:
        self.percentile = percentile
        self.window = window
        self.include_current = include_current
        self._history: Tensor | None = None  # [window] float64, NaN = empty
        self._cursor = 0

    def _record(self, norm: Tensor) -> None:
        if self._history is None:
            self._history = torch.full((self.window,), math.nan, dtype=torch.float64, device=norm.device)
        self._history = self._history.to(norm.device)  # restored from a checkpoint on the CPU
        value = torch.where(torch.isfinite(norm), norm.to(torch.float64), math.nan)
        self._history[self._cursor % self.window] = value
        self._cursor += 1

    def _quantile(self, device: torch.device) -> Tensor:
        if self._history is None:
            return torch.tensor(math.inf, dtype=torch.float64, device=device)
        threshold = torch.nanquantile(self._history, self.percentile / 100.0)  # linear, as numpy
        return torch.where(torch.isnan(threshold), math.inf, threshold)  # empty history: no clip

    def update(self, norm: Tensor) -> Tensor:
        """Add ``norm`` (0-d) to the history; return the threshold for this step (inf: none)."""
        if self.include_current:
            self._record(norm)
            return self._quantile(norm.device)
        threshold = self._quantile(norm.device)
        self._record(norm)
        return threshold

    def state_dict(self) -> dict:
        return {"history": None if self._history is None else self._history.cpu(), "cursor": self._cursor}

    def load_state_dict(self, state: dict) -> None:
        self._history = state.get("history")
        self._cursor = int(state.get("cursor", 0))


class ZScoreThreshold:
    """ZClip: clip norms whose z-score against an EMA of the norm exceeds ``z_thresh``.

    The first ``warmup_steps`` finite norms initialise the mean and (population) variance; no
    step is clipped before. Then, for a norm with ``z = (norm - mu) / (sigma + eps) > z_thresh``,
    the threshold is ``mu + z_thresh**2 * sigma / z`` (reciprocal clipping: the larger the
    outlier, the harder the clip), and the EMA is updated with the clipped value, so a spike does
    not inflate the statistics. Non-finite norms are ignored. Everything runs on the device.

    ``min_ratio`` (1: ZClip as published) adds a second condition: a norm is an outlier only when
    it is also at least ``min_ratio`` times the running mean. With a fast EMA the variance of a
    steady phase is small, so a step at 2-5x the mean already has a z-score of 4; such steps
    are ordinary on a healthy run near its best learning rate, while a gradient spike that wrecks
    a run is 100x or more (see :class:`~lightning_convergence.callbacks.autoclip.AutoClip`).

    Args:
        z_thresh: z-score above which a norm is clipped.
        alpha: EMA smoothing of mean and variance.
        eps: added to sigma in the z-score.
        warmup_steps: finite norms collected before the EMA starts.
        min_ratio: least multiple of the running mean a clipped norm has (>= 1).

    Example:
        >>> import torch
        >>> rule = ZScoreThreshold(z_thresh=2.5, warmup_steps=3)
        >>> values = [1.0, 1.2, 0.8, 1.1, 50.0]
        >>> [round(rule.update(torch.tensor(v)).item(), 3) for v in values][-1] < 50.0
        True
    """

    def __init__(self, z_thresh: float = 2.5, alpha: float = 0.97, eps: float = 1e-6, warmup_steps: int = 25,
                 min_ratio: float = 1.0) -> None:
        self.z_thresh = z_thresh
        self.min_ratio = min_ratio
        self.alpha = alpha
        self.eps = eps
        self.warmup_steps = warmup_steps
        # EMA mean and variance, finite norms seen, whether the EMA started; and the warm-up norms.
        self._state = DeviceWindow()
        for name in ("mean", "var", "count", "initialised"):
            self._state.declare(name, (), "first")
        self._state.declare("warmup_norms", max(warmup_steps, 1), "first")
        # Set from a host read the caller makes anyway (a logging step): once the EMA started it
        # never stops, so the warm-up's ops are skipped from then on (the same state either way).
        self.known_initialised = False

    def onset(self) -> Tensor:
        """The norm above which the next step is clipped, ``mean + z_thresh * std`` of the EMA or
        ``min_ratio * mean``, whichever is higher (0-d, on the device; inf before the warm-up ends). The clip threshold itself depends on
        how far above it a norm lands (reciprocal clipping), so this is the line to plot."""
        if not self._state.allocated:
            return torch.tensor(math.inf, dtype=torch.float64)
        state = self._state
        line = torch.maximum(state["mean"] + self.z_thresh * state["var"].sqrt(), self.min_ratio * state["mean"])
        return torch.where(state["initialised"] > 0, line, math.inf)

    def initialised_flag(self) -> Tensor:
        """1.0 once the EMA started, else 0.0 (0-d, on the device): for a caller's own host read,
        which it passes back to :meth:`note_read`."""
        return self._state["initialised"] if self._state.allocated else torch.zeros((), dtype=torch.float64)

    def note_read(self, initialised: float) -> None:
        """Tell the rule what a host read of :meth:`initialised_flag` gave."""
        self.known_initialised = self.known_initialised or initialised > 0

    def update(self, norm: Tensor) -> Tensor:
        """Return this step's threshold for ``norm`` (0-d; inf: no clipping) and update the EMA."""
        state = self._state
        if not state.allocated:
            state.allocate(norm.device)
            state.set(mean=torch.zeros(()), var=torch.zeros(()), count=torch.zeros(()), initialised=torch.zeros(()),
                      warmup_norms=torch.zeros(state["warmup_norms"].shape))
        elif state.device != norm.device:
            state.allocate(norm.device)  # after a restore on the CPU
        x = norm.to(torch.float64)
        finite = torch.isfinite(x)
        mean, var = state["mean"], state["var"]
        initialised = True if self.known_initialised else state["initialised"] > 0
        std = var.sqrt()
        z = (x - mean) / (std + self.eps)
        spike = finite & (z > self.z_thresh) & (x >= self.min_ratio * mean) & initialised
        threshold = torch.where(spike, mean + self.z_thresh**2 * std / z, math.inf)
        effective = torch.where(spike, threshold, x)
        new_mean = self.alpha * mean + (1 - self.alpha) * effective
        new_var = self.alpha * var + (1 - self.alpha) * (effective - new_mean) ** 2
        if self.known_initialised:  # the warm-up is over: its ops would change nothing
            state.set(mean=torch.where(finite, new_mean, mean), var=torch.where(finite, new_var, var))
            return threshold
        buffer, count = state["warmup_norms"], state["count"]
        ema = initialised & finite
        # Warm-up: collect finite norms; the step that completes the buffer starts the EMA.
        collecting = ~initialised & finite
        slot = count.clamp(max=buffer.numel() - 1).long()
        buffer[slot] = torch.where(collecting, x, buffer[slot])
        new_count = count + collecting.to(count.dtype)
        starts = collecting & (new_count >= self.warmup_steps)
        warm_mean = buffer.mean()
        warm_var = ((buffer - warm_mean) ** 2).mean()
        state.set(
            mean=torch.where(ema, new_mean, torch.where(starts, warm_mean, mean)),
            var=torch.where(ema, new_var, torch.where(starts, warm_var, var)),
            count=new_count,
            initialised=(initialised | starts).to(torch.float64),
        )
        return threshold

    def statistics(self) -> dict[str, float]:
        """``{"mean", "var", "count", "initialised"}`` of the EMA on the host (a sync point: for
        tests and reports, not for per-step code); zeros before the first norm."""
        if not self._state.allocated:
            return {"mean": 0.0, "var": 0.0, "count": 0.0, "initialised": 0.0}
        values = self._state.read()
        self.known_initialised = values["initialised"] > 0
        return {k: values[k] for k in ("mean", "var", "count", "initialised")}

    def state_dict(self) -> dict:
        return self._state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._state.load_state_dict({k: v for k, v in state.items() if v is not None})
        self.known_initialised = False


def clip_coefficient(norm: Tensor, threshold: Tensor, max_norm: float | None = None) -> Tensor:
    """Scale factor in (0, 1] that brings ``norm`` down to ``threshold`` (and ``max_norm``).

    1 where the norm is not finite: NaN/Inf gradients are for the skip remedy, not for clipping.

    Example:
        >>> import torch
        >>> clip_coefficient(torch.tensor(10.0), torch.tensor(2.0)).item() < 0.2000001
        True
    """
    limit = threshold.to(torch.float64)
    if max_norm is not None:
        limit = torch.clamp(limit, max=max_norm)
    norm64 = norm.to(torch.float64)
    coefficient = torch.clamp(limit / (norm64 + _NORM_EPS), max=1.0)
    return torch.where(torch.isfinite(norm64), coefficient, 1.0)


def scale_gradients_(grads: Sequence[Tensor | None], coefficient: Tensor) -> None:
    """Multiply every gradient in place by the 0-d ``coefficient``.

    On an accelerator the multiply always runs (deciding to skip it would need a host read, a
    sync). On CPU the coefficient is read for free, and a coefficient of exactly 1 (no clip, most
    steps of an outlier-only clipper) skips a pass that writes every gradient.
    """
    if coefficient.device.type == "cpu" and cpu_scalar(coefficient) == 1.0:
        return
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for grad in grads:
        if grad is not None:
            groups.setdefault((grad.device, grad.dtype), []).append(grad)
    for (device, dtype), group in groups.items():
        factor = coefficient.to(device=device, dtype=dtype)
        if group[0].layout == torch.strided and all(g.layout == torch.strided for g in group):
            torch._foreach_mul_(group, factor)
        else:
            for grad in group:
                grad.mul_(factor)


def unitwise_norm(x: Tensor) -> Tensor:
    """Norm per output unit: over all dims but the first (a scalar for 0-d/1-d tensors)."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


def adaptive_clip_(params: Iterable[torch.nn.Parameter], clip_factor: float = 0.01, eps: float = 1e-3) -> Tensor:
    """NFNets' adaptive gradient clipping, unit-wise, in place; returns the fraction of units clipped.

    A unit's gradient is scaled down to ``clip_factor * max(||w_unit||, eps)`` when its norm is
    larger. Sparse gradients are left alone.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 1)
        >>> layer.weight.grad, layer.bias.grad = torch.full((1, 2), 100.0), torch.zeros(1)
        >>> round(adaptive_clip_([layer.weight, layer.bias]).item(), 2)
        0.5
    """
    clipped, units = [], 0
    for param in params:
        grad = param.grad
        if grad is None or grad.layout != torch.strided:
            continue
        limit = unitwise_norm(param.detach()).clamp(min=eps) * clip_factor
        grad_norm = unitwise_norm(grad.detach())
        over = grad_norm > limit
        grad.mul_(torch.where(over, limit / grad_norm.clamp(min=_NORM_EPS), 1.0).to(grad.dtype))
        clipped.append(over.sum())
        units += over.numel()
    if not clipped:
        return torch.zeros(())
    return torch.stack(clipped).sum().to(torch.float32) / units
