"""``default_callbacks``: the suite with defaults that are safe on any model."""

from __future__ import annotations

import inspect
from typing import Any

from lightning.pytorch.callbacks import Callback

from lightning_convergence.callbacks import GradientNormMonitor

# The callbacks of the suite, in the order they run. Each later callback joins this list.
_SUITE: tuple[type[Callback], ...] = (GradientNormMonitor,)


def _accepted(cls: type[Callback]) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "auto_remediate"}


def default_callbacks(auto_remediate: bool = False, **overrides: Any) -> list[Callback]:
    """The suite, ready for ``Trainer(callbacks=...)``.

    Args:
        auto_remediate: ``False``: the suite only observes; training is bit-identical to a run
            without it. ``True``: the monitors act on what they diagnose.
        **overrides: constructor arguments, each passed to every callback of the suite that
            accepts it (for example ``log_every_n_steps=20``).

    Raises:
        TypeError: an override that no callback of the suite accepts, or a non-bool
            ``auto_remediate``.

    Example:
        >>> [type(c).__name__ for c in default_callbacks()]
        ['GradientNormMonitor']
    """
    if not isinstance(auto_remediate, bool):
        raise TypeError(f"`auto_remediate` must be a bool, got {auto_remediate!r}.")
    known = set().union(*(_accepted(cls) for cls in _SUITE))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"default_callbacks() got unknown overrides {unknown}; known: {sorted(known)}.")
    callbacks = []
    for cls in _SUITE:
        kwargs = {k: v for k, v in overrides.items() if k in _accepted(cls)}
        callbacks.append(cls(auto_remediate=auto_remediate, **kwargs))
    return callbacks
