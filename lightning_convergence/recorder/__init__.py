"""The convergence report: records, the shared run log and its writers.

Only the pure parts are imported here; the TensorBoard and console writers (which know Lightning)
live in ``recorder.tensorboard`` and ``recorder.console``.
"""

from lightning_convergence.recorder.records import (
    CAUSES,
    DIAGNOSIS_KINDS,
    INTERVENTION_ACTIONS,
    SEVERITIES,
    Cause,
    Diagnosis,
    Finding,
    Intervention,
)
from lightning_convergence.recorder.run_log import REPORT_FILENAME, REPORT_VERSION, ConvergenceLog

__all__ = [
    "CAUSES",
    "DIAGNOSIS_KINDS",
    "INTERVENTION_ACTIONS",
    "REPORT_FILENAME",
    "REPORT_VERSION",
    "SEVERITIES",
    "Cause",
    "ConvergenceLog",
    "Diagnosis",
    "Finding",
    "Intervention",
]
