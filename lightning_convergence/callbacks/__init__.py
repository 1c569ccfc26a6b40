"""The suite's Lightning callbacks: thin adapters from hooks to statistics, rules and remedies."""

from lightning_convergence.callbacks.autoclip import AutoClip
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.callbacks.data_loading_monitor import DataLoadingMonitor
from lightning_convergence.callbacks.dead_neuron_tracker import DeadNeuronTracker
from lightning_convergence.callbacks.gradient_norm_monitor import GradientNormMonitor
from lightning_convergence.callbacks.initialization_audit import InitializationAudit
from lightning_convergence.callbacks.input_sanity_checker import InputSanityChecker
from lightning_convergence.callbacks.plateau_advisor import PlateauAdvisor
from lightning_convergence.callbacks.warmup_scheduler import WarmupScheduler

__all__ = [
    "AutoClip",
    "ConvergenceCallback",
    "DataLoadingMonitor",
    "DeadNeuronTracker",
    "GradientNormMonitor",
    "InitializationAudit",
    "InputSanityChecker",
    "PlateauAdvisor",
    "WarmupScheduler",
]
