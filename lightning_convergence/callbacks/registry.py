"""The one table of the package's callbacks.

The public exports (``lightning_convergence`` and ``lightning_convergence.callbacks``),
:func:`~lightning_convergence.suite.default_callbacks`, ``examples/suite.yaml`` and the tests
that every callback must pass are all derived from :data:`CALLBACKS`, and a test fails when a
:class:`~lightning_convergence.callbacks.base.ConvergenceCallback` subclass of the package is
missing from it. Adding a callback is: its rule, its callback, its entry here, its tests.

This module names classes by string and imports nothing heavy, so that
``import lightning_convergence`` (and ``lightning-convergence --help``) does not load torch or
Lightning; :func:`load` imports a callback's module on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Mode = Literal["observe", "act", "warmup"]
MODES: tuple[Mode, ...] = ("observe", "act", "warmup")


@dataclass(frozen=True)
class Registered:
    """One callback of the package.

    Args:
        name: the class name, exported under it from ``lightning_convergence``.
        module: the module that defines the class.
        modes: when :func:`~lightning_convergence.suite.default_callbacks` includes it:
            ``"observe"`` with ``auto_remediate=False``, ``"act"`` with ``auto_remediate=True``,
            ``"warmup"`` only when warmup is asked for (``warmup_steps=...`` or its own dict of
            arguments). Empty: the callback is public but not part of the suite.
        suite_args: its arguments within the suite, where they differ from its own defaults.
        example: the fewest arguments that build it for a short test run (a Trainer of a few
            dozen steps); ``{}`` when its defaults do.
        second_instance: arguments that give a second instance a different ``state_key``, so
            that two of it can share a Trainer; ``None`` when one per Trainer is the use.
    """

    name: str
    module: str
    modes: frozenset[Mode]
    suite_args: Mapping[str, Any] = field(default_factory=dict)
    example: Mapping[str, Any] = field(default_factory=dict)
    second_instance: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.modes) - set(MODES)
        if unknown:
            raise ValueError(f"`modes` must be a subset of {MODES}, got {sorted(unknown)!r}.")
        # Read-only views: an entry is shared by every caller.
        for name in ("suite_args", "example", "second_instance"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))


_MONITOR = frozenset({"observe", "act"})

# In the order the callbacks run (the suite, the YAML and the exports keep it). The monitors
# come first: they see the gradients before AutoClip scales them. InputSanityChecker comes
# after GradientNormMonitor: a NaN batch's gradients are skipped by the monitor first, and the
# checker names the cause.
CALLBACKS: tuple[Registered, ...] = (
    # First: its checks run in on_train_start, before the other callbacks' first step, and
    # everything it touches is put back. In the suite it runs only when its steps cost at most
    # 2% of the planned run (``enabled=None``).
    Registered("PreflightCheck", "lightning_convergence.callbacks.preflight_check", _MONITOR,
               example={"enabled": True, "range_test_steps": 5, "overfit_steps": 5, "num_batches": 2},
               second_instance=None),
    Registered("GradientNormMonitor", "lightning_convergence.callbacks.gradient_norm_monitor", _MONITOR,
               second_instance={"group_by": "parameter"}),
    Registered("DeadNeuronTracker", "lightning_convergence.callbacks.dead_neuron_tracker", _MONITOR,
               second_instance={"dormant_tau": 0.2}),
    Registered("InputSanityChecker", "lightning_convergence.callbacks.input_sanity_checker", _MONITOR,
               second_instance={"num_classes": 10}),
    Registered("InitializationAudit", "lightning_convergence.callbacks.initialization_audit", _MONITOR),
    # After the input checks: at a window end they post their evidence (input and target scale,
    # label order) in the same hook before the advisor judges the loss and ranks its causes.
    Registered("PlateauAdvisor", "lightning_convergence.callbacks.plateau_advisor", _MONITOR,
               second_instance={"monitor": "train_loss"}),
    Registered("TrainingSpeedMonitor", "lightning_convergence.callbacks.training_speed_monitor", _MONITOR),
    # Preventive, not a reaction: only when asked for (warmup_steps=... or WarmupScheduler={...}).
    Registered("WarmupScheduler", "lightning_convergence.callbacks.warmup_scheduler", frozenset({"warmup"}),
               example={"warmup_steps": 5}, second_instance={"warmup_steps": 7}),
    # Clipping joins only to act, and only on outliers, so a healthy run is barely changed.
    # ZClip's own defaults (z 2.5, alpha 0.97) clipped 158 of 188 steps of a healthy digits
    # CNN whose gradient norm rises steadily (the EMA, fed clipped values, never catches up)
    # and cost 2-10 points of accuracy; z 4 with alpha 0.9 clipped 1-2 steps, accuracy
    # unchanged, while x100 input spikes are still cut. A clipped step must also be 10x the
    # running mean (``min_ratio``): healthy sweep runs' z-outliers were 1.9-4.7x, and clipping
    # them moved those runs' outcomes by more than 10%, either way; for 100 steps after another
    # remedy acted, every z-outlier is clipped again. It runs after the monitor,
    # which sees the gradients before any clip.
    Registered("AutoClip", "lightning_convergence.callbacks.autoclip", frozenset({"act"}),
               suite_args={"mode": "zscore", "z_thresh": 4.0, "alpha": 0.9, "min_ratio": 10.0,
                           "guard_remedy_steps": 100, "clip_warmup_steps": 10},
               second_instance={"mode": "zscore"}),
)

BY_NAME: Mapping[str, Registered] = MappingProxyType({entry.name: entry for entry in CALLBACKS})

# Former names, still importable from the package: alias -> (its module, the registered name).
ALIASES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "DataLoadingMonitor": ("lightning_convergence.callbacks.data_loading_monitor", "TrainingSpeedMonitor"),
})


def in_mode(mode: Mode) -> tuple[Registered, ...]:
    """The callbacks that the suite includes in ``mode``, in the order they run.

    Example:
        >>> [entry.name for entry in in_mode("act")][-1]
        'AutoClip'
        >>> [entry.name for entry in in_mode("warmup")]
        ['WarmupScheduler']
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
    return tuple(entry for entry in CALLBACKS if mode in entry.modes)


def load(entry: Registered | str) -> type:
    """The callback class, importing its module (and so torch and Lightning) on first use.

    Example:
        >>> load("AutoClip").__name__
        'AutoClip'
    """
    entry = BY_NAME[entry] if isinstance(entry, str) else entry
    return getattr(importlib.import_module(entry.module), entry.name)
