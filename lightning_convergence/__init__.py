"""lightning-convergence: Lightning callbacks that say, during the run, why training is failing
to converge, show it in TensorBoard, and fix what can be fixed when asked.

The public names are loaded on first use, so that the command line answers ``--help`` without
importing torch and Lightning. The callbacks among them come from the one table of callbacks,
:mod:`lightning_convergence.callbacks.registry`.
"""

from __future__ import annotations

from lightning_convergence._imports import lazy_exports
from lightning_convergence.callbacks.registry import ALIASES, CALLBACKS

__version__ = "0.1.0"

_EXPORTS = {
    **{entry.name: entry.module for entry in CALLBACKS},
    **{alias: module for alias, (module, _) in ALIASES.items()},
    "default_callbacks": "lightning_convergence.suite",
    "Diagnosis": "lightning_convergence.recorder.records",
    "Intervention": "lightning_convergence.recorder.records",
    "ConvergenceWarning": "lightning_convergence.recorder.console",  # to filter the suite's warnings
}

__all__ = [*sorted(_EXPORTS), "__version__"]

__getattr__ = lazy_exports("lightning_convergence", _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*__all__, "__getattr__", "__doc__", "__name__"})
