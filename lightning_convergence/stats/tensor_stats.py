"""One pass over a list of tensors: per-tensor sum of squares, max |x| and non-finite count.

This is the statistics engine every callback shares. It takes parameters' gradients (or weights)
as they come: ``None`` entries, empty tensors, mixed devices and dtypes (fp16, bf16, fp32, fp64)
and sparse COO gradients. Tensors are grouped by device and dtype; each group goes to the chosen
backend; results come back in input order on one device, as one small float32 tensor. Nothing
here reads a value on the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lightning_convergence.stats.backends import resolve_backend
from lightning_convergence.stats import host
from lightning_convergence.stats.foreach import foreach_sum_of_squares, foreach_tensor_stats
from lightning_convergence.stats.reference import reference_sum_of_squares, reference_tensor_stats

STAT_FIELDS: tuple[str, ...] = ("sumsq", "absmax", "nonfinite")
SUMSQ, ABSMAX, NONFINITE = 0, 1, 2


def _dense_view(tensor: Tensor) -> Tensor:
    """The values to measure: the tensor itself, or a sparse COO tensor's coalesced values."""
    if tensor.layout == torch.strided:
        return tensor
    if tensor.layout == torch.sparse_coo:
        # Coalescing sums duplicate indices, so the values give the true norm of the gradient.
        return tensor.detach().coalesce().values()
    raise TypeError(
        f"Gradient statistics support dense and sparse COO tensors, got layout {tensor.layout}."
    )


@functools.lru_cache(maxsize=64)
def _index_tensor(indices: tuple[int, ...], device: torch.device) -> Tensor:
    # Cached so a steady training loop does not copy index lists to the device every step.
    return torch.tensor(indices, dtype=torch.long, device=device)


def _output_device(tensors: Sequence[Tensor | None]) -> torch.device:
    for tensor in tensors:
        if tensor is not None:
            return tensor.device
    return torch.device("cpu")


def _run_grouped(tensors: Sequence[Tensor | None], backend: str, width: int, **options: bool) -> Tensor:
    """Group present tensors by (device, dtype), run ``backend`` per group, scatter back."""
    out_device = _output_device(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    values: list[Tensor | None] = []
    missing = False
    for i, tensor in enumerate(tensors):
        if tensor is None:
            values.append(None)
            missing = True
            continue
        value = _dense_view(tensor)
        values.append(value)
        groups.setdefault((value.device, value.dtype), []).append(i)

    if len(groups) == 1 and not missing:
        # The common case: one group, all present, already in order; nothing to allocate or scatter.
        (device, _dtype), = groups
        return _BACKENDS[(resolve_backend(backend, device), width)](values, **options)
    shape = (len(tensors),) if width == 1 else (len(tensors), width)
    result = torch.zeros(shape, dtype=torch.float32, device=out_device)
    for (device, _dtype), indices in groups.items():
        group = [values[i] for i in indices]
        concrete = resolve_backend(backend, device)
        group_result = _BACKENDS[(concrete, width)](group, **options).to(out_device, non_blocking=True)
        result.index_copy_(0, _index_tensor(tuple(indices), out_device), group_result)
    return result


def _triton_tensor_stats(tensors: Sequence[Tensor], count_nonfinite: bool = True) -> Tensor:
    from lightning_convergence.stats.triton_kernel import triton_tensor_stats

    stats = triton_tensor_stats(tensors)  # counts come free in the fused pass
    if not count_nonfinite:
        stats = torch.cat([stats[:, :NONFINITE], (stats[:, NONFINITE:] > 0).to(stats.dtype)], dim=1)
    return stats


def _triton_sum_of_squares(tensors: Sequence[Tensor]) -> Tensor:
    return _triton_tensor_stats(tensors)[:, SUMSQ]


_BACKENDS = {
    ("reference", 3): reference_tensor_stats,
    ("foreach", 3): foreach_tensor_stats,
    ("triton", 3): _triton_tensor_stats,
    ("reference", 1): reference_sum_of_squares,
    ("foreach", 1): foreach_sum_of_squares,
    ("triton", 1): _triton_sum_of_squares,
}


@torch.no_grad()
def tensor_stats(tensors: Sequence[Tensor | None], backend: str = "auto", count_nonfinite: bool = True) -> Tensor:
    """Per-tensor ``[sum of squares, max |x|, count of non-finite values]`` in one pass.

    Args:
        tensors: gradients or weights; ``None`` entries give a row of zeros.
        backend: ``"auto"``, ``"reference"``, ``"foreach"`` or ``"triton"``.
        count_nonfinite: count NaN/Inf values exactly. ``False`` puts 1.0 in the last column of
            a tensor holding any (0.0 otherwise): exact too, and free on CPU, where a count costs
            an extra pass and a temporary as large as the tensor.

    Returns:
        float32 tensor ``[len(tensors), 3]`` on the device of the first present tensor. Columns
        are :data:`STAT_FIELDS`. NaN/Inf in a tensor propagate into its sum of squares and max.

    Raises:
        ValueError: unknown ``backend``.
        RuntimeError: ``backend="triton"`` cannot run on these tensors' device.
        TypeError: a tensor has a layout other than strided or sparse COO.

    Example:
        >>> import torch
        >>> tensor_stats([torch.tensor([3.0, 4.0]), None, torch.tensor([float("nan")])]).tolist()
        [[25.0, 4.0, 0.0], [0.0, 0.0, 0.0], [nan, nan, 1.0]]
    """
    return _run_grouped(tensors, backend, width=3, count_nonfinite=count_nonfinite)


@torch.no_grad()
def sum_of_squares(tensors: Sequence[Tensor | None], backend: str = "auto") -> Tensor:
    """Per-tensor sum of squares, float32 ``[len(tensors)]``: the cheap every-step pass.

    A non-finite entry means the tensor holds NaN/Inf, or its squares overflow float32 (values
    around 1e19); :func:`tensor_stats` tells the two apart.

    Example:
        >>> import torch
        >>> sum_of_squares([torch.ones(4), None]).tolist()
        [4.0, 0.0]
    """
    return _run_grouped(tensors, backend, width=1)


def host_sum_of_squares(tensors: Sequence[Tensor | None], backend: str = "auto",
                        then: Callable[[Tensor], object] | None = None) -> list[float] | None:
    """The every-step pass on the host path: :func:`sum_of_squares` as ``N`` Python floats.

    Taken when every tensor is a dense float32 CPU tensor (none missing), ``backend`` is
    ``"auto"`` or ``"foreach"`` and the host path is on (:mod:`~lightning_convergence.stats.host`);
    the values are then exactly those of :func:`sum_of_squares`, without building a tensor that
    the host path would read back at once. ``None`` when the tensors do not all qualify: call
    :func:`sum_of_squares`. ``then`` is called with each tensor right after its sum (see
    :func:`~lightning_convergence.stats.host.cpu_sums_of_squares`), on the host path only.

    Example:
        >>> import torch
        >>> host_sum_of_squares([torch.tensor([3.0, 4.0])])
        [25.0]
        >>> host_sum_of_squares([torch.tensor([3.0, 4.0]), None]) is None
        True
    """
    if not host.HOST_PATH_ON_CPU or backend not in ("auto", "foreach"):
        return None
    return host.cpu_sums_of_squares(tensors, torch.float32, then)
