"""lightning-convergence: Lightning callbacks that say, during the run, why training is failing
to converge, show it in TensorBoard, and fix what can be fixed when asked.

The public names are loaded on first use, so that the command line answers ``--help`` without
importing torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AutoClip": "lightning_convergence.callbacks.autoclip",
    "DataLoadingMonitor": "lightning_convergence.callbacks.data_loading_monitor",
    "DeadNeuronTracker": "lightning_convergence.callbacks.dead_neuron_tracker",
    "GradientNormMonitor": "lightning_convergence.callbacks.gradient_norm_monitor",
    "InitializationAudit": "lightning_convergence.callbacks.initialization_audit",
    "InputSanityChecker": "lightning_convergence.callbacks.input_sanity_checker",
    "PlateauAdvisor": "lightning_convergence.callbacks.plateau_advisor",
    "WarmupScheduler": "lightning_convergence.callbacks.warmup_scheduler",
    "default_callbacks": "lightning_convergence.suite",
    "Diagnosis": "lightning_convergence.report.records",
    "Intervention": "lightning_convergence.report.records",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from lightning_convergence.callbacks.autoclip import AutoClip
    from lightning_convergence.callbacks.data_loading_monitor import DataLoadingMonitor
    from lightning_convergence.callbacks.dead_neuron_tracker import DeadNeuronTracker
    from lightning_convergence.callbacks.gradient_norm_monitor import GradientNormMonitor
    from lightning_convergence.callbacks.initialization_audit import InitializationAudit
    from lightning_convergence.callbacks.input_sanity_checker import InputSanityChecker
    from lightning_convergence.callbacks.plateau_advisor import PlateauAdvisor
    from lightning_convergence.callbacks.warmup_scheduler import WarmupScheduler
    from lightning_convergence.report.records import Diagnosis, Intervention
    from lightning_convergence.suite import default_callbacks


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_convergence' has no attribute {name!r}")
