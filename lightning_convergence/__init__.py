"""lightning-convergence: Lightning callbacks that say, during the run, why training is failing
to converge, show it in TensorBoard, and fix what can be fixed when asked."""

from lightning_convergence.callbacks import GradientNormMonitor
from lightning_convergence.report import Diagnosis, Intervention
from lightning_convergence.suite import default_callbacks

__version__ = "0.1.0"

__all__ = ["Diagnosis", "GradientNormMonitor", "Intervention", "__version__", "default_callbacks"]
