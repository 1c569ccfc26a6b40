"""Adaptive gradient clipping: thresholds learned from the run, applied on the device.

Measure and act are separate (as ``get_total_norm`` and ``clip_grads_with_norm_`` in
``torch.nn.utils.clip_grad``): a threshold rule (:mod:`~lightning_convergence.remedies.clip_thresholds`) turns the pre-clip
global norm into a threshold, :func:`clip_coefficient` turns both into a scale factor with
``clamp``/``where`` (no host read), and :func:`scale_gradients_` applies it. Everything stays a
0-d tensor on the gradients' device; on the host path (gradients on the CPU, see
:mod:`~lightning_convergence.stats.host`) the norm, threshold and factor are Python floats.

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

from lightning_convergence.remedies.clip_thresholds import _NORM_EPS, PercentileThreshold, ZScoreThreshold
from lightning_convergence.stats.host import cpu_floats, cpu_scalar, on_host_path

__all__ = ["PercentileThreshold", "ZScoreThreshold", "adaptive_clip_", "clip_coefficient", "global_norm",
           "scale_gradients_", "unitwise_norm"]


def global_norm(sumsq: Tensor | list[float]) -> Tensor | float:
    """The global L2 norm from per-tensor sums of squares ``[N]``: a 0-d tensor on the device, or
    a float on the host path (a CPU tensor, read for free: see :mod:`~lightning_convergence.stats.host`,
    or the floats themselves).

    Example:
        >>> import torch
        >>> global_norm(torch.tensor([9.0, 16.0]))
        5.0
    """
    if isinstance(sumsq, list):
        return math.sqrt(sum(sumsq))
    if on_host_path(sumsq):
        return math.sqrt(sum(cpu_floats(sumsq)))
    return sumsq.sum().sqrt()


def clip_coefficient(norm: Tensor | float, threshold: Tensor | float, max_norm: float | None = None) -> Tensor | float:
    """Scale factor in (0, 1] that brings ``norm`` down to ``threshold`` (and ``max_norm``).

    1 where the norm is not finite: NaN/Inf gradients are for the skip remedy, not for clipping.
    0-d tensors give a 0-d float64 tensor; floats (the host path) give a float.

    Example:
        >>> import torch
        >>> clip_coefficient(torch.tensor(10.0), torch.tensor(2.0)).item() < 0.2000001
        True
    """
    if isinstance(norm, float):
        if not math.isfinite(norm):
            return 1.0
        limit = float(threshold) if max_norm is None else min(float(threshold), max_norm)
        return min(limit / (norm + _NORM_EPS), 1.0)
    limit = threshold.to(torch.float64)
    if max_norm is not None:
        limit = torch.clamp(limit, max=max_norm)
    norm64 = norm.to(torch.float64)
    coefficient = torch.clamp(limit / (norm64 + _NORM_EPS), max=1.0)
    return torch.where(torch.isfinite(norm64), coefficient, 1.0)


def scale_gradients_(grads: Sequence[Tensor | None], coefficient: Tensor | float) -> None:
    """Multiply every gradient in place by the 0-d ``coefficient`` (or a float).

    On an accelerator the multiply always runs (deciding to skip it would need a host read, a
    sync). On CPU the coefficient is read for free, and a coefficient of exactly 1 (no clip, most
    steps of an outlier-only clipper) skips a pass that writes every gradient.
    """
    if isinstance(coefficient, float):
        if coefficient == 1.0:
            return
        coefficient = torch.tensor(coefficient, dtype=torch.float64)  # rounded to each dtype as on the device
    elif coefficient.device.type == "cpu" and cpu_scalar(coefficient) == 1.0:
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
