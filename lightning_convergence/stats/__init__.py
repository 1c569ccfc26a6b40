"""Pure tensor statistics over lists of tensors: no Lightning, no state, no host sync."""

from lightning_convergence.stats.backends import BACKENDS, Backend, resolve_backend, validate_backend
from lightning_convergence.stats.grouping import reduce_by_group, sum_by_group
from lightning_convergence.stats.tensor_stats import (
    ABSMAX,
    NONFINITE,
    STAT_FIELDS,
    SUMSQ,
    host_sum_of_squares,
    sum_of_squares,
    tensor_stats,
)

__all__ = [
    "ABSMAX",
    "BACKENDS",
    "Backend",
    "NONFINITE",
    "STAT_FIELDS",
    "SUMSQ",
    "host_sum_of_squares",
    "reduce_by_group",
    "resolve_backend",
    "sum_by_group",
    "sum_of_squares",
    "tensor_stats",
    "validate_backend",
]
