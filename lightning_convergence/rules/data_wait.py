"""Is training waiting for its data? The share of wall time spent between batches.

Fed, per window, the host time between the end of one training batch and the start of the next
(fetching the batch, plus a little loop overhead) and the time inside batches, the rule reports
``slow_data_loading`` when the wait is a large share of the total and not negligible in
absolute terms (a tiny model whose steps take 1 ms is not slowed by a 0.5 ms fetch in any way a
user would notice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lightning_convergence.rules.findings import Finding
from lightning_convergence.validation import check_fields, check_nonnegative_float, check_open_fraction


@dataclass(frozen=True)
class DataWaitThresholds:
    """Thresholds of :class:`DataWaitRule`.

    Args:
        warning_fraction: share of wall time waiting for data that is a ``warning``.
        info_fraction: share that is ``info``.
        min_wait_ms: mean wait per batch below which nothing is reported.
    """

    warning_fraction: float = 0.5
    info_fraction: float = 0.3
    min_wait_ms: float = 2.0

    def __post_init__(self) -> None:
        check_fields(self, check_open_fraction, "warning_fraction", "info_fraction")
        if self.info_fraction > self.warning_fraction:
            raise ValueError(f"`info_fraction` must be <= `warning_fraction`, got {self.info_fraction!r}.")
        check_fields(self, check_nonnegative_float, "min_wait_ms")


class DataWaitRule:
    """Judges one window of batch timings.

    Example:
        >>> rule = DataWaitRule()
        >>> finding = rule.evaluate(wait_s=4.0, busy_s=1.0, batches=50, first_step=0, last_step=49, num_workers=0)
        >>> finding.kind, finding.severity
        ('slow_data_loading', 'warning')
    """

    def __init__(self, thresholds: DataWaitThresholds | None = None) -> None:
        self.thresholds = thresholds or DataWaitThresholds()

    def evaluate(self, wait_s: float, busy_s: float, batches: int, first_step: int, last_step: int,
                 num_workers: int | None = None) -> Finding | None:
        t = self.thresholds
        total = wait_s + busy_s
        if batches == 0 or not (wait_s >= 0 and busy_s >= 0 and math.isfinite(total)) or total <= 0:
            return None  # nothing timed, or timings that cannot be (clocks only move forward)
        fraction = wait_s / total
        mean_wait_ms = 1000.0 * wait_s / batches
        if fraction < t.info_fraction or mean_wait_ms < t.min_wait_ms:
            return None
        severity = "warning" if fraction >= t.warning_fraction else "info"
        workers = "" if num_workers is None else f" The training DataLoader has num_workers={num_workers}."
        seen = (f"Training spent {fraction:.0%} of its wall time waiting for the next batch over steps "
                f"{first_step}-{last_step} ({mean_wait_ms:.1f} ms per batch waiting, "
                f"{1000.0 * busy_s / batches:.1f} ms computing).{workers}")
        evidence = {"wait_fraction": fraction, "wait_ms_per_batch": mean_wait_ms,
                    "step_ms_per_batch": 1000.0 * busy_s / batches, "batches": batches, "num_workers": num_workers}
        return Finding("slow_data_loading", severity, seen, evidence=evidence)
