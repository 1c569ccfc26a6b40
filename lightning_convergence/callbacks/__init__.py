"""The suite's Lightning callbacks: thin adapters from hooks to statistics, rules and remedies."""

from lightning_convergence.callbacks.autoclip import AutoClip
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.callbacks.dead_neuron_tracker import DeadNeuronTracker
from lightning_convergence.callbacks.gradient_norm_monitor import GradientNormMonitor
from lightning_convergence.callbacks.plateau_advisor import PlateauAdvisor
from lightning_convergence.callbacks.warmup_scheduler import WarmupScheduler

__all__ = ["AutoClip", "ConvergenceCallback", "DeadNeuronTracker", "GradientNormMonitor", "PlateauAdvisor", "WarmupScheduler"]
