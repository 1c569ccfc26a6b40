"""Choosing a statistics backend, once, with honest semantics.

``"auto"`` picks the fastest backend that can run and falls back quietly; an explicit backend that
cannot run raises and says why (the model is ``foreach=None/True/False`` in
``torch.nn.utils.clip_grad``).
"""

from __future__ import annotations

from typing import Literal

import torch

from lightning_convergence._imports import _TRITON_AVAILABLE, triton_interpret_mode

Backend = Literal["auto", "reference", "foreach", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "foreach", "triton")


def validate_backend(backend: object) -> str:
    """Check a backend name; raise ``ValueError`` naming the value when it is unknown."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    return str(backend)


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton kernel cannot run on ``device``, or ``None`` when it can."""
    if not _TRITON_AVAILABLE:
        return "triton is not installed (`pip install 'lightning-convergence[triton]'`)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and triton_interpret_mode():
        return None
    return f"the Triton kernel runs on CUDA devices (or on CPU with TRITON_INTERPRET=1), not on {device.type!r}"


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``backend`` into the concrete backend to use for tensors on ``device``.

    Args:
        backend: ``"auto"``, ``"reference"``, ``"foreach"`` or ``"triton"``.
        device: where the tensors live.

    Raises:
        ValueError: ``backend`` is not a known name.
        RuntimeError: ``backend="triton"`` was asked for explicitly and cannot run here.

    Example:
        >>> import torch
        >>> resolve_backend("auto", torch.device("cpu"))
        'foreach'
    """
    validate_backend(backend)
    if backend == "auto":
        if device.type == "cuda" and triton_unavailable_reason(device) is None:
            return "triton"
        return "foreach"
    if backend == "triton":
        reason = triton_unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(f"`backend='triton'` cannot run: {reason}.")
    return backend
