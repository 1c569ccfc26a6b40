"""The scalars TrainingSpeedMonitor logs: each window's and, at the end, the whole run's."""

from __future__ import annotations

from collections.abc import Mapping

from lightning_convergence import tags
from lightning_convergence.rules.wall_time import RunTimes


def window_metrics(summary: Mapping[str, float], phases: Mapping[str, float], sequence_length: int | None,
                   on_cpu: bool) -> dict[str, float]:
    """One window's scalars, from its ``StepWindow.summary()`` and its seconds per phase: each
    phase's share, the step time, throughput, the wait for data, and on a CPU the process's CPU
    share. Values that are unknown are left out.

    Example:
        >>> window_metrics({"step_ms": 10.0, "samples_per_s": 3200.0}, {"forward": 1.0, "fetch": 3.0}, 128,
        ...                on_cpu=False)["convergence/speed/tokens_per_s"]
        409600.0
    """
    total = sum(phases.values())
    metrics = {tags.speed_share(p): s / total for p, s in phases.items() if total > 0}
    metrics.update({tags.SPEED_STEP_MS: summary.get("step_ms"), tags.SPEED_SAMPLES_PER_S: summary.get("samples_per_s"),
                    tags.DATA_WAIT_FRACTION: summary.get("fetch_share"), tags.DATA_WAIT_MS: summary.get("fetch_ms")})
    if sequence_length and summary.get("samples_per_s") is not None:
        metrics[tags.SPEED_TOKENS_PER_S] = summary["samples_per_s"] * sequence_length
    if on_cpu:
        metrics[tags.SPEED_CPU_SHARE] = summary.get("cpu_share")
    return {k: v for k, v in metrics.items() if v is not None}


def run_metrics(run: RunTimes) -> dict[str, float]:
    """The whole run's scalars: where its time went, per phase, and its samples per second
    (nothing before any time was measured).

    Example:
        >>> run_metrics(RunTimes(phases={"forward": 3.0, "fetch": 1.0}, samples=400))["convergence/speed/run_samples_per_s"]
        100.0
        >>> run_metrics(RunTimes(phases={}))
        {}
    """
    if run.wall_s <= 0:
        return {}
    metrics: dict[str, float | None] = {tags.speed_run_share(p): share for p, share in run.shares().items()}
    metrics[tags.SPEED_RUN_SAMPLES_PER_S] = run.samples / run.wall_s if run.samples else None
    return {k: v for k, v in metrics.items() if v is not None}
