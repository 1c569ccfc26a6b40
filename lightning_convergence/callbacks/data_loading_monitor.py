"""``DataLoadingMonitor``, the former name of :class:`TrainingSpeedMonitor` (an alias, kept importable).

The data-loading monitor judged one share (the wait between batches) per window and left the
epoch's first batch out; :class:`~lightning_convergence.callbacks.training_speed_monitor.TrainingSpeedMonitor`
replaces it in the suite and answers the whole question (where the wall time goes, why it is
slow). Its arguments differ: ``thresholds`` is a
:class:`~lightning_convergence.rules.wall_time.SpeedThresholds`.

Example:
    >>> DataLoadingMonitor is TrainingSpeedMonitor
    True
"""

from __future__ import annotations

from lightning_convergence.callbacks.training_speed_monitor import TrainingSpeedMonitor

DataLoadingMonitor = TrainingSpeedMonitor

__all__ = ["DataLoadingMonitor"]
