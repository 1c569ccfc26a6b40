"""What the wall-time rule is fed: the timed steps of a window, the whole run so far, the
training DataLoader and the Trainer's knobs. Plain data, seconds as floats; no Lightning."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from lightning_convergence.rules.phase_timeline import PHASES


@dataclass
class LoaderSettings:
    """What is known of the training DataLoader and the machine (``None``: unknown)."""

    num_workers: int | None = None
    persistent_workers: bool | None = None
    batch_size: int | None = None
    cpu_count: int | None = None
    on_cpu: bool = True  # training runs on the CPU: compute is host work, its CPU time means something
    val_num_workers: int | None = None  # the (first) validation DataLoader's
    val_persistent_workers: bool | None = None


@dataclass
class RunSettings:
    """The Trainer's settings that the overheads' knobs turn (``None``: unknown)."""

    log_every_n_steps: int | None = None
    val_check_interval: float | None = None
    check_val_every_n_epoch: int | None = None
    max_epochs: int | None = None  # the run's length, beyond which "validate less often" means never


@dataclass
class StepWindow:
    """The timed steps of one window, per step in seconds: the wait for its batch, its compute
    (forward, backward, optimizer), the process CPU time and the wall time from its
    ``on_train_batch_start`` to its ``on_train_batch_end`` (``busy``), and its whole wall time.
    The first step of each epoch (its wait is the loader starting) is not in it. The CPU time may
    be measured on some steps only (``cpu_s=None`` on the others): the CPU share is taken over the
    steps that measured it (``cpu_busy_s``, their busy time)."""

    fetch_s: list[float] = field(default_factory=list)
    compute_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # the steps that measured it only
    busy_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    samples: int = 0
    cpu_busy_s: list[float] = field(default_factory=list)  # busy time of the steps in ``cpu_s``

    def add(self, fetch_s: float, compute_s: float, cpu_s: float | None, busy_s: float, wall_s: float,
            samples: int = 0) -> None:
        self.fetch_s.append(float(fetch_s))
        self.compute_s.append(float(compute_s))
        if cpu_s is not None:
            self.cpu_s.append(float(cpu_s))
            self.cpu_busy_s.append(float(busy_s))
        self.busy_s.append(float(busy_s))
        self.wall_s.append(float(wall_s))
        self.samples += int(samples)

    def __len__(self) -> int:
        return len(self.fetch_s)

    def plausible(self) -> bool:
        """Whether every timing is a finite duration of at least 0 (clocks only move forward:
        a window holding one that is not was measured wrongly, and is not judged)."""
        return all(math.isfinite(v) and v >= 0 for name in _DURATIONS for v in getattr(self, name))

    def extend(self, other: StepWindow) -> None:
        for name in _DURATIONS:
            getattr(self, name).extend(getattr(other, name))
        self.samples += other.samples

    def summary(self) -> dict[str, float]:
        """Medians in ms, the wait's share of a step (medians), the process CPU share while in
        its steps (CPU seconds over wall seconds, summed), samples/s over the window's wall time."""
        if not self:
            return {}
        fetch, compute = statistics.median(self.fetch_s), statistics.median(self.compute_s)
        wall, cpu_busy = sum(self.wall_s), sum(self.cpu_busy_s)
        return {"fetch_ms": 1000 * fetch, "compute_ms": 1000 * compute,
                "step_ms": 1000 * statistics.median(self.wall_s),
                "fetch_share": fetch / (fetch + compute) if fetch + compute > 0 else 0.0,
                "cpu_share": sum(self.cpu_s) / cpu_busy if cpu_busy > 0 else 1.0,
                "samples_per_s": self.samples / wall if wall > 0 and self.samples else math.nan}


_DURATIONS = ("fetch_s", "compute_s", "cpu_s", "busy_s", "wall_s", "cpu_busy_s")


@dataclass
class RunTimes:
    """The whole run so far: seconds per phase (:data:`PHASES`), the wall time of each epoch's
    start (its first ``epoch_start_batches`` batches: one per worker that starts with the epoch),
    and how often validation, logging and checkpoints happened."""

    phases: dict[str, float]
    epoch_starts_s: list[float] = field(default_factory=list)
    epoch_start_batches: int = 1
    steady_fetch_s: float = 0.0  # median wait for a batch within an epoch
    steps: int = 0
    validations: int = 0
    checkpoints: int = 0
    validation_s: list[float] = field(default_factory=list)  # each validation run's wall time, when known
    validation_starts_s: list[float] = field(default_factory=list)  # each run's wait for its first batch
    checkpoint_s: list[float] = field(default_factory=list)  # each checkpoint's
    callbacks_s: dict[str, float] = field(default_factory=dict)  # per callback class, its hooks' time
    own_callbacks_s: float = 0.0  # the convergence suite's own callbacks (in ``callbacks_s`` and the shares)
    suite_callbacks: frozenset[str] = frozenset()  # their class names in ``callbacks_s``
    samples: int = 0  # training samples seen (the first dimension of each batch)
    sequence_length: int | None = None  # tokens per sample, when told
    precision: str | None = None  # Lightning's precision string ("32-true", "bf16-mixed", ...)
    device: str | None = None  # "cpu", "cuda", ...

    @property
    def wall_s(self) -> float:
        return sum(self.phases.values())

    def shares(self) -> dict[str, float]:
        wall = self.wall_s
        return {p: (self.phases.get(p, 0.0) / wall if wall > 0 else 0.0) for p in PHASES}
