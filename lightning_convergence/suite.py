"""``default_callbacks``: the suite with defaults that are safe on any model."""

from __future__ import annotations

import inspect
from typing import Any

from lightning.pytorch.callbacks import Callback

from lightning_convergence.callbacks import (
    AutoClip,
    DataLoadingMonitor,
    DeadNeuronTracker,
    GradientNormMonitor,
    InitializationAudit,
    InputSanityChecker,
    PlateauAdvisor,
    WarmupScheduler,
)

# The monitors, in the order they run. InputSanityChecker comes after GradientNormMonitor: a
# NaN batch's gradients are skipped by the monitor first, and the checker names the cause.
_MONITORS: tuple[type[Callback], ...] = (
    GradientNormMonitor,
    DeadNeuronTracker,
    PlateauAdvisor,
    InputSanityChecker,
    InitializationAudit,
    DataLoadingMonitor,
)


def _accepted(cls: type[Callback]) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "auto_remediate"}


def _suite(auto_remediate: bool, warmup: bool) -> list[tuple[type[Callback], dict[str, Any]]]:
    """The callbacks and their defaults for this mode."""
    suite: list[tuple[type[Callback], dict[str, Any]]] = [(cls, {}) for cls in _MONITORS]
    if warmup:
        # Preventive, not a reaction: only when asked for (warmup_steps=... or WarmupScheduler={...}).
        suite.append((WarmupScheduler, {}))
    if auto_remediate:
        # Clipping joins only to act, and only on outliers, so a healthy run is barely changed.
        # ZClip's own defaults (z 2.5, alpha 0.97) clipped 158 of 188 steps of a healthy digits
        # CNN whose gradient norm rises steadily (the EMA, fed clipped values, never catches up)
        # and cost 2-10 points of accuracy; z 4 with alpha 0.9 clipped 1-2 steps, accuracy
        # unchanged, while x100 input spikes are still cut. It runs after the monitor, which sees
        # the gradients before any clip.
        suite.append((AutoClip, {"mode": "zscore", "z_thresh": 4.0, "alpha": 0.9, "clip_warmup_steps": 10}))
    return suite


def default_callbacks(auto_remediate: bool = False, **overrides: Any) -> list[Callback]:
    """The suite, ready for ``Trainer(callbacks=...)``.

    Args:
        auto_remediate: ``False``: the suite only observes; training is bit-identical to a run
            without it. ``True``: the monitors act on what they diagnose, and AutoClip joins in
            z-score mode tuned to touch outlier steps only (``z_thresh=4``, ``alpha=0.9``,
            ``clip_warmup_steps=10``). WarmupScheduler joins when ``warmup_steps`` (or
            ``WarmupScheduler={...}``) is given, with ``auto_remediate=True`` only.
        **overrides: either a callback's class name with a dict of its arguments
            (``AutoClip={"z_thresh": 3.0}``) or ``None`` to leave it out (``AutoClip=None``),
            or a plain argument passed to every callback of the suite that accepts it
            (``log_every_n_steps=20``).

    Raises:
        TypeError: an override that no callback of the suite accepts, or a non-bool
            ``auto_remediate``.
        ValueError: warmup asked for with ``auto_remediate=False``.

    Example:
        >>> len(default_callbacks())
        6
        >>> [type(c).__name__ for c in default_callbacks(auto_remediate=True)][-1]
        'AutoClip'
        >>> [type(c).__name__ for c in default_callbacks(auto_remediate=True, warmup_steps=500)][-2:]
        ['WarmupScheduler', 'AutoClip']
    """
    if not isinstance(auto_remediate, bool):
        raise TypeError(f"`auto_remediate` must be a bool, got {auto_remediate!r}.")
    warmup = "warmup_steps" in overrides or isinstance(overrides.get("WarmupScheduler"), dict)
    if warmup and not auto_remediate:
        raise ValueError("Warmup changes training, and `auto_remediate=False` promises it does not: pass "
                         "`auto_remediate=True` with `warmup_steps`, or add `WarmupScheduler()` to the callbacks.")
    suite = _suite(auto_remediate, warmup)
    by_name = {cls.__name__: cls for cls in (*_MONITORS, AutoClip, WarmupScheduler)}
    per_callback = {k: v for k, v in overrides.items() if k in by_name}
    shared = {k: v for k, v in overrides.items() if k not in by_name}
    known = set().union(*(_accepted(cls) for cls, _ in suite))
    unknown = sorted(set(shared) - known)
    if unknown:
        raise TypeError(f"default_callbacks() got unknown overrides {unknown}; known: {sorted(known)}.")
    for name, value in per_callback.items():
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"`{name}` must be a dict of arguments or None, got {value!r}.")
    callbacks = []
    for cls, defaults in suite:
        if cls.__name__ in per_callback and per_callback[cls.__name__] is None:
            continue
        kwargs = {**defaults, **{k: v for k, v in shared.items() if k in _accepted(cls)},
                  **(per_callback.get(cls.__name__) or {})}
        if "auto_remediate" in inspect.signature(cls.__init__).parameters:
            kwargs["auto_remediate"] = auto_remediate
        callbacks.append(cls(**kwargs))
    return callbacks
