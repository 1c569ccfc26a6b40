"""Finding the tensors in a batch, whatever its shape: a tensor, tuples, lists, dicts, dataclasses.

Each tensor is named by its path (``batch[0]``, ``batch['image']``, ``batch.labels``), so that a
finding can say which part of the batch it is about. Parts that are not tensors (strings, file
names, ``None``) are listed as skipped, never an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from torch import Tensor

_MAX_DEPTH = 6


def batch_tensors(batch: object) -> tuple[list[tuple[str, Tensor]], list[str]]:
    """``([(path, tensor), ...], [skipped paths])`` for one batch.

    Example:
        >>> import torch
        >>> found, skipped = batch_tensors({"image": torch.zeros(2, 3), "ids": ["a", "b"], "y": torch.ones(2)})
        >>> [path for path, _ in found], skipped
        (["batch['image']", "batch['y']"], ["batch['ids']"])
    """
    found: list[tuple[str, Tensor]] = []
    skipped: list[str] = []
    _walk(batch, "batch", found, skipped, 0)
    return found, skipped


def _walk(value: object, path: str, found: list, skipped: list, depth: int) -> None:
    if isinstance(value, Tensor):
        found.append((path, value))
    elif depth >= _MAX_DEPTH:
        skipped.append(path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, f"{path}[{key!r}]", found, skipped, depth + 1)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        for name in value._fields:
            _walk(getattr(value, name), f"{path}.{name}", found, skipped, depth + 1)
    elif isinstance(value, (list, tuple)) and not all(isinstance(v, (str, bytes)) for v in value):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", found, skipped, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            _walk(getattr(value, item.name), f"{path}.{item.name}", found, skipped, depth + 1)
    elif value is not None:
        skipped.append(path)
