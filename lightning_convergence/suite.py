"""``default_callbacks``: the suite with defaults that are safe on any model."""

from __future__ import annotations

import inspect
from typing import Any

from lightning.pytorch.callbacks import Callback

from lightning_convergence.callbacks import registry


def _accepted(cls: type[Callback]) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "auto_remediate"}


def _suite(auto_remediate: bool, warmup: bool) -> list[tuple[type[Callback], dict[str, Any]]]:
    """The callbacks and their defaults for this mode, in the order they run (the registry's)."""
    modes = {"act" if auto_remediate else "observe", *(["warmup"] if warmup else [])}
    return [(registry.load(entry), dict(entry.suite_args))
            for entry in registry.CALLBACKS if modes & entry.modes]


def _acting_only(names: list[str], auto_remediate: bool) -> str:
    """Which of ``names`` belong to a callback that the suite holds in another mode, said."""
    if auto_remediate:
        return ""
    owners = {}
    for cls, _ in _suite(True, warmup=True):
        for name in sorted(set(names) & _accepted(cls)):
            owners.setdefault(name, cls.__name__)
    said = [f" `{name}` is an argument of {owner}, which joins the suite only with `auto_remediate=True`."
            for name, owner in owners.items()]
    return "".join(said)


def default_callbacks(auto_remediate: bool = False, **overrides: Any) -> list[Callback]:
    """The suite, ready for ``Trainer(callbacks=...)``.

    Args:
        auto_remediate: ``False``: the suite only observes; training is bit-identical to a run
            without it. ``True``: the monitors act on what they diagnose, and AutoClip joins in
            z-score mode tuned to touch outlier steps only (``z_thresh=4``, ``alpha=0.9``,
            ``min_ratio=10``, ``clip_warmup_steps=10``). PreflightCheck is in both, and runs when its steps cost at
            most 2% of the planned run. WarmupScheduler joins when ``warmup_steps`` (or
            ``WarmupScheduler={...}``) is given, with ``auto_remediate=True`` only.
        **overrides: either a callback's class name with a dict of its arguments
            (``AutoClip={"z_thresh": 3.0}``) or ``None`` to leave it out (``AutoClip=None``),
            or a plain argument passed to every callback of the suite that accepts it
            (``log_every_n_steps=20``).

    Raises:
        TypeError: an override that no callback of the suite accepts, or a non-bool
            ``auto_remediate``.
        ValueError: warmup asked for with ``auto_remediate=False``, or settings for a callback
            that the suite holds only when acting (``AutoClip={...}`` without ``auto_remediate=True``).

    Example:
        >>> len(default_callbacks())
        7
        >>> [type(c).__name__ for c in default_callbacks(auto_remediate=True)][-1]
        'AutoClip'
        >>> [type(c).__name__ for c in default_callbacks(auto_remediate=True, warmup_steps=500)][-2:]
        ['WarmupScheduler', 'AutoClip']
    """
    if not isinstance(auto_remediate, bool):
        raise TypeError(f"`auto_remediate` must be a bool, got {auto_remediate!r}.")
    warmup = "warmup_steps" in overrides or any(
        isinstance(overrides.get(entry.name), dict) for entry in registry.in_mode("warmup"))
    if warmup and not auto_remediate:
        raise ValueError("Warmup changes training, and `auto_remediate=False` promises it does not: pass "
                         "`auto_remediate=True` with `warmup_steps`, or add `WarmupScheduler()` to the callbacks.")
    suite = _suite(auto_remediate, warmup)
    in_suite = {entry.name for entry in registry.CALLBACKS if entry.modes}
    per_callback = {k: v for k, v in overrides.items() if k in in_suite}
    shared = {k: v for k, v in overrides.items() if k not in in_suite}
    known = set().union(*(_accepted(cls) for cls, _ in suite))
    unknown = sorted(set(shared) - known)
    if unknown:
        elsewhere = _acting_only(unknown, auto_remediate)
        raise TypeError(f"default_callbacks() got unknown overrides {unknown}; known: {sorted(known)}.{elsewhere}")
    for name, value in per_callback.items():
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"`{name}` must be a dict of arguments or None, got {value!r}.")
    chosen = {cls.__name__ for cls, _ in suite}
    absent = sorted(name for name, value in per_callback.items() if value and name not in chosen)
    if absent:  # settings that would be dropped without a word
        raise ValueError(f"default_callbacks() got settings for {absent}, which the suite does not hold with "
                         f"auto_remediate={auto_remediate}: they change training, so they join only with "
                         "`auto_remediate=True`. Pass it, or add the callback to `Trainer(callbacks=...)` yourself.")
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
