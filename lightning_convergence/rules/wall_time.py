"""Why is training slow? Where the wall time goes, turned into causes with the knob to turn.

Two judgements, both on host wall time charged to phases (:mod:`.phase_timeline`):

- **The steady input pipeline, per window** (:meth:`WallTimeRule.judge_loader`): the median time
  a step waits for its batch within an epoch against the median time it computes (forward,
  backward, optimizer). Medians, so that one slow step (a garbage-collection pause, the process
  descheduled for a moment, a checkpoint written) moves nothing; never on fewer than
  ``min_steps`` steps; never below ``min_fetch_ms`` per batch. A window in which the process got
  less than ``min_cpu_share`` of the CPU while it computed on a CPU (a busy machine: every phase
  is slow, the loader is not to blame) is not judged. A bottleneck is ``slow_data_loading`` with
  the cause ``data_loader_bottleneck`` and a ``num_workers`` computed from the measured costs.
- **The run's overheads, cumulative** (:meth:`WallTimeRule.judge_run`): the share of the whole
  run's wall time spent restarting the loader at each epoch start (``data_loader_restarts``:
  ``persistent_workers=True``), validating (``validation_too_frequent``), logging and in
  callbacks (``logging_overhead``) and writing checkpoints (``checkpointing_overhead``). Each
  counts when its share reaches its threshold *and* it cost at least ``min_overhead_s`` in all.

Pure Python, no Lightning: fed seconds, returns :class:`~.findings.Finding` records.

References:
    PyTorch, "Performance Tuning Guide" (num_workers, pin_memory, persistent workers; avoid
    host syncs); Lightning, "Find bottlenecks in your code" (the SimpleProfiler's actions,
    ``log_every_n_steps``, ``val_check_interval``, ``check_val_every_n_epoch``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from lightning_convergence.rules.findings import Cause, Finding
from lightning_convergence.rules.timings import LoaderSettings, RunSettings, RunTimes, StepWindow
from lightning_convergence.validation import (check_fields, check_nonnegative_float, check_open_fraction,
                                              check_positive_int)

Overhead = tuple[Cause, str, list[str]]  # a cause, the sentence that says it, its remedies

# The diagnoses' ``layer``: the part of the run's time concerned. A kind is reported once per
# report window per layer, so each part has its own (and a slow_training of the loss, whose layer
# is None, is never silenced by one of these).
__all__ = ["LoaderSettings", "RunSettings", "RunTimes", "SpeedThresholds", "StepWindow", "WallTimeRule",
           "suggest_num_workers"]

LAYER = "wall_time"
FETCH_LAYER = f"{LAYER}/fetch"
EPOCH_START_LAYER = f"{LAYER}/epoch_start"
VALIDATION_START_LAYER = f"{LAYER}/validation_start"
OVERHEADS_LAYER = f"{LAYER}/overheads"
DEVICE_LAYER = f"{LAYER}/device"


@dataclass(frozen=True)
class SpeedThresholds:
    """Thresholds of :class:`WallTimeRule`.

    Args:
        min_steps: timed steps a judgement needs (a shorter window waits for the next one).
        fetch_share: share of a step spent waiting for its batch (medians) that is a warning.
        min_fetch_ms: median wait per batch, in ms, below which the loader is never blamed.
        min_cpu_share: on a CPU, process CPU time over wall time while computing below which
            the process was descheduled (a busy machine) and the window is not judged.
        restart_share, validation_share, logging_share, checkpoint_share: share of the run's wall
            time that each overhead must reach to be a warning.
        min_overhead_s: seconds an overhead must cost in all to be a warning.
        target_share: the share the suggested settings aim for (a setting that brings an
            overhead to about this share of the run).
    """

    min_steps: int = 20
    fetch_share: float = 0.5
    min_fetch_ms: float = 5.0
    min_cpu_share: float = 0.5
    restart_share: float = 0.15
    validation_share: float = 0.3
    logging_share: float = 0.2
    checkpoint_share: float = 0.15
    min_overhead_s: float = 0.5
    target_share: float = 0.1

    def __post_init__(self) -> None:
        check_positive_int("min_steps", self.min_steps)
        check_fields(self, check_open_fraction, "fetch_share", "min_cpu_share", "restart_share", "validation_share",
                     "logging_share", "checkpoint_share", "target_share")
        check_fields(self, check_nonnegative_float, "min_fetch_ms", "min_overhead_s")


def suggest_num_workers(fetch_s: float, compute_s: float, num_workers: int | None, cpu_count: int | None) -> int:
    """Workers that would load a batch in less time than a step computes, from the measured wait.

    With ``w`` workers the main process waits ``f`` per batch and computes ``c``: each worker
    takes about ``w * (f + c)`` per batch, so ``k`` workers keep up when ``w * (f + c) / k <= c``
    (with no worker, a batch costs ``f`` on the main process). One more for jitter, at most the
    cores the machine has.

    Example:
        >>> suggest_num_workers(fetch_s=0.030, compute_s=0.010, num_workers=0, cpu_count=16)
        4
        >>> suggest_num_workers(fetch_s=0.030, compute_s=0.010, num_workers=2, cpu_count=4)
        4
    """
    if compute_s <= 0:
        return max(1, cpu_count or 1)
    per_batch = fetch_s if not num_workers else num_workers * (fetch_s + compute_s)
    needed = math.ceil(per_batch / compute_s) + 1
    return max(1, min(needed, cpu_count) if cpu_count else needed)


def _confidence(share: float, threshold: float) -> float:
    """0.6 at the threshold, rising with the share, at most 0.95."""
    return round(min(0.95, 0.6 + 0.35 * (share - threshold) / max(1e-9, 1 - threshold)), 3)


class WallTimeRule:
    """Judges where the wall time goes: the steady loader per window, the overheads per run.

    Example:
        >>> rule = WallTimeRule()
        >>> window = StepWindow()
        >>> for _ in range(20):
        ...     window.add(fetch_s=0.030, compute_s=0.010, cpu_s=0.010, busy_s=0.011, wall_s=0.041, samples=32)
        >>> finding = rule.judge_loader(window, LoaderSettings(num_workers=0, cpu_count=8), 0, 19)
        >>> finding.kind, finding.causes[0].cause, finding.evidence["suggested_num_workers"]
        ('slow_data_loading', 'data_loader_bottleneck', 4)
    """

    def __init__(self, thresholds: SpeedThresholds | None = None) -> None:
        self.thresholds = thresholds or SpeedThresholds()

    def judge_loader(self, window: StepWindow, loader: LoaderSettings, first_step: int,
                     last_step: int) -> Finding | None:
        """``slow_data_loading`` (``data_loader_bottleneck``) for a window whose steps wait for
        their batch more than they compute, or ``None`` (too few steps, a busy machine, a wait
        too small to matter)."""
        t = self.thresholds
        if len(window) < t.min_steps:
            return None
        if not window.plausible():
            return None  # a timing that cannot be (clocks only move forward): not judged
        s = window.summary()
        if loader.on_cpu and s["cpu_share"] < t.min_cpu_share:
            return None  # descheduled: every phase is slow, the wait is not the loader's
        if s["fetch_share"] < t.fetch_share or s["fetch_ms"] < t.min_fetch_ms:
            return None
        needed = suggest_num_workers(s["fetch_ms"] / 1000, s["compute_ms"] / 1000, loader.num_workers, None)
        workers = min(needed, loader.cpu_count) if loader.cpu_count else needed
        setting = "" if loader.num_workers is None else f" (num_workers={loader.num_workers})"
        seen = (f"Training waited for its next batch {s['fetch_share']:.0%} of each step over steps {first_step}-"
                f"{last_step} ({len(window)} steps): {s['fetch_ms']:.1f} ms waiting against {s['compute_ms']:.1f} ms "
                f"computing per step (medians){setting}.")
        evidence = {**{k: round(v, 4) for k, v in s.items() if math.isfinite(v)}, "steps": len(window),
                    "num_workers": loader.num_workers, "suggested_num_workers": workers, "cpu_count": loader.cpu_count,
                    "workers_to_keep_up": needed}
        remedies = [f"raise the DataLoader's num_workers to about {workers} (from the measured wait per batch over the "
                    "compute per step)"]
        if needed > workers:
            remedies.append(f"{needed} workers would keep up, and this process may use {loader.cpu_count} cores: "
                            "also move decoding and augmentation off the hot path (pre-process once, cache, or do it "
                            "on the GPU)")
        if not loader.on_cpu:
            remedies.append("pin_memory=True")
        cause = Cause("data_loader_bottleneck", _confidence(s["fetch_share"], t.fetch_share),
                      {"fetch_ms": evidence["fetch_ms"], "compute_ms": evidence["compute_ms"],
                       "fetch_share": evidence["fetch_share"]})
        return Finding("slow_data_loading", "warning", seen, layer=FETCH_LAYER, evidence=evidence, causes=(cause,),
                       remedies=tuple(remedies))

    def judge_run(self, run: RunTimes, loader: LoaderSettings, settings: RunSettings) -> list[Finding]:
        """The run's overheads: a ``slow_data_loading`` finding for loader restarts and a
        ``slow_training`` one whose ranked causes are the other overheads over their thresholds."""
        t = self.thresholds
        wall = run.wall_s
        if run.steps < t.min_steps or wall <= 0:
            return []
        findings = []
        val_restarts = self._validation_restarts(run, loader, wall)
        for restart in (self._restarts(run, loader, wall), val_restarts):
            if restart is not None:
                findings.append(restart)
        # Seconds said to be the validation loader's restarts are not blamed on validating too often.
        spared = self._validation_restart_cost(run, loader) if val_restarts is not None else 0.0
        found = [f for f in (self._validation(run, settings, wall, spared), self._logging(run, settings, wall),
                             self._checkpointing(run, settings, wall)) if f is not None]
        found.sort(key=lambda f: -f[0].confidence)  # the top cause leads the sentence and the advice
        if found:
            seen = (f"Of the run's {wall:.1f} s of wall time over {run.steps} steps, "
                    + "; ".join(f[1] for f in found) + ".")
            findings.append(Finding("slow_training", "warning", seen, layer=OVERHEADS_LAYER,
                                    evidence=self.breakdown(run),
                                    causes=tuple(f[0] for f in found),
                                    remedies=tuple(r for f in found for r in f[2])))
        return findings

    @staticmethod
    def breakdown(run: RunTimes) -> dict:
        """The run's shares per phase (rounded), its wall time and counts: a report's evidence."""
        wall = run.wall_s
        out = {"wall_s": round(wall, 3), "steps": run.steps,
               "shares": {p: round(v, 4) for p, v in run.shares().items() if v > 0},
               "validations": run.validations, "checkpoints": run.checkpoints,
               "callbacks_ms": {k: round(1000 * v, 1) for k, v in sorted(run.callbacks_s.items(),
                                                                          key=lambda kv: -kv[1])[:5]},
               "precision": run.precision, "device": run.device}
        if run.samples and wall > 0:
            out["samples_per_s"] = round(run.samples / wall, 2)
            if run.sequence_length:
                out["tokens_per_s"] = round(run.samples * run.sequence_length / wall, 1)
        return out

    def _restarts(self, run: RunTimes, loader: LoaderSettings, wall: float) -> Finding | None:
        t = self.thresholds
        later = run.epoch_starts_s[1:]  # the first start happens with persistent workers too
        if not later:
            return None
        extra = [max(0.0, s - run.epoch_start_batches * run.steady_fetch_s) for s in later]
        cost = statistics.median(extra) * len(extra)  # one slow start (a descheduled moment) moves nothing
        share = cost / wall
        if share < t.restart_share or cost < t.min_overhead_s:
            return None
        per_epoch_ms = 1000 * statistics.median(extra)
        restarting = bool(loader.num_workers) and loader.persistent_workers is False
        evidence = {"restart_ms_per_epoch": round(per_epoch_ms, 1), "restart_share": round(share, 4),
                    "epochs": len(run.epoch_starts_s), "num_workers": loader.num_workers,
                    "persistent_workers": loader.persistent_workers,
                    "steady_fetch_ms": round(1000 * run.steady_fetch_s, 2)}
        first = "first batch" if run.epoch_start_batches == 1 else f"first {run.epoch_start_batches} batches"
        seen = (f"The {first} of each epoch after the first took {per_epoch_ms:.0f} ms more than batches within "
                f"an epoch ({1000 * run.steady_fetch_s:.1f} ms each): {share:.0%} of the run's {wall:.1f} s of wall "
                f"time over {len(run.epoch_starts_s)} epochs.")
        if restarting:
            seen += f" The training DataLoader starts {loader.num_workers} new worker processes every epoch."
            cause = Cause("data_loader_restarts", _confidence(share, t.restart_share), evidence)
            remedies = ("persistent_workers=True in the training DataLoader, so that its workers survive between "
                        "epochs", "move expensive set-up (opening files, building indices) out of worker_init_fn and "
                        "the Dataset's constructor")
        else:
            cause = Cause("data_loader_bottleneck", _confidence(share, t.restart_share), evidence)
            remedies = ("make the start of an epoch cheaper: the sampler's or the dataset's __iter__ (shuffling, "
                        "re-reading an index) runs on the training process every epoch",)
        return Finding("slow_data_loading", "warning", seen, layer=EPOCH_START_LAYER,
                       evidence={**evidence, **self.breakdown(run)},
                       causes=(cause,), remedies=remedies)

    def _validation_restart_cost(self, run: RunTimes, loader: LoaderSettings) -> float:
        """Seconds the validation loader's workers cost starting anew on every validation run (their
        median wait for a first batch, times the runs), when they are not persistent; else 0."""
        if not (loader.val_num_workers and loader.val_persistent_workers is False and run.validation_starts_s):
            return 0.0
        return statistics.median(run.validation_starts_s) * len(run.validation_starts_s)

    def _validation_restarts(self, run: RunTimes, loader: LoaderSettings, wall: float) -> Finding | None:
        t = self.thresholds
        cost = self._validation_restart_cost(run, loader)
        share = cost / wall
        if share < t.restart_share or cost < t.min_overhead_s:
            return None
        each_ms = 1000 * statistics.median(run.validation_starts_s)
        evidence = {"validation_start_ms_each": round(each_ms, 1), "restart_share": round(share, 4),
                    "validations": len(run.validation_starts_s), "val_num_workers": loader.val_num_workers,
                    "val_persistent_workers": loader.val_persistent_workers}
        seen = (f"Each validation run waited {each_ms:.0f} ms for its first batch while the validation DataLoader "
                f"started {loader.val_num_workers} new worker processes: {share:.0%} of the run's {wall:.1f} s of "
                f"wall time over {len(run.validation_starts_s)} validation runs.")
        return Finding("slow_data_loading", "warning", seen, layer=VALIDATION_START_LAYER, evidence=evidence,
                       causes=(Cause("data_loader_restarts", _confidence(share, t.restart_share), evidence),),
                       remedies=("persistent_workers=True in the validation DataLoader, so that its workers survive "
                                 "between validation runs", "or fewer workers for a small validation set"))

    def _overhead(self, run: RunTimes, phase: str, threshold: float, wall: float,
                  events: list[float], spared: float = 0.0) -> tuple[float, float] | None:
        # Each event at its median cost: one validation or checkpoint that the process spent
        # descheduled, or that a GC pause hit, does not make the rest look costly.
        cost = statistics.median(events) * len(events) if events else run.phases.get(phase, 0.0)
        cost = max(0.0, cost - spared)
        share = cost / wall
        if share < threshold or cost < self.thresholds.min_overhead_s:
            return None
        return cost, share

    def _validation(self, run: RunTimes, settings: RunSettings, wall: float, spared: float = 0.0) -> Overhead | None:
        found = self._overhead(run, "validation", self.thresholds.validation_share, wall, run.validation_s, spared)
        if found is None or not run.validations:
            return None
        cost, share = found
        per_run, between = cost / run.validations, (wall - cost) / run.validations
        target = self.thresholds.target_share
        less_often = max(2, math.ceil(per_run * (1 - target) / (target * max(between, 1e-9))))
        evidence = {"validation_share": round(share, 4), "validations": run.validations,
                    "validation_ms_each": round(1000 * per_run, 1), "train_ms_between": round(1000 * between, 1),
                    "validate_less_often_by": less_often}
        interval = settings.val_check_interval
        fewer = f"validate on a sample: limit_val_batches={min(0.5, 1 / less_often):.2g} (a fraction of the set)"
        if isinstance(interval, float) and interval < 1:
            wanted = interval * less_often  # in epochs
            knob = (f"val_check_interval={wanted:.2g} (now {interval:g})" if wanted <= 1 else
                    f"val_check_interval=1.0 (now {interval:g}) with check_val_every_n_epoch={math.ceil(wanted)}")
        elif isinstance(interval, int) and interval > 1:
            knob = f"val_check_interval={interval * less_often} (now {interval})"
        else:
            every = settings.check_val_every_n_epoch or 1
            knob = f"check_val_every_n_epoch={every * less_often} (now {every})"
            if settings.max_epochs and every * less_often > settings.max_epochs:
                knob = None  # less often than the run is long: validate on fewer batches instead
        sentence = (f"{share:.0%} went to validation ({run.validations} runs of {1000 * per_run:.0f} ms against "
                    f"{1000 * between:.0f} ms of training between them)")
        remedies = [fewer] if knob is None else [f"validate {less_often}x less often: {knob}", f"or {fewer}"]
        return (Cause("validation_too_frequent", _confidence(share, self.thresholds.validation_share), evidence),
                sentence, remedies)

    def _logging(self, run: RunTimes, settings: RunSettings, wall: float) -> Overhead | None:
        # The suite's own hooks are in the shares, but not blamed here: what they cost is measured
        # by its overhead benchmark, and a diagnosis of the user's run should name the user's knobs.
        others = max(0.0, run.phases.get("callbacks", 0.0) - run.own_callbacks_s)
        cost = run.phases.get("logging", 0.0) + others
        share = cost / wall
        if share < self.thresholds.logging_share or cost < self.thresholds.min_overhead_s:
            return None
        logging_share, callbacks_share = run.phases.get("logging", 0.0) / wall, others / wall
        top = sorted(((k, v) for k, v in run.callbacks_s.items() if k not in run.suite_callbacks),
                     key=lambda kv: -kv[1])[:3]
        evidence = {"logging_share": round(logging_share, 4), "callbacks_share": round(callbacks_share, 4),
                    "costliest_callbacks_ms": {k: round(1000 * v, 1) for k, v in top},
                    "log_every_n_steps": settings.log_every_n_steps}
        every = settings.log_every_n_steps or 50
        factor = max(2, math.ceil(share / self.thresholds.target_share))
        named = ", ".join(f"{k} {v / wall:.0%}" for k, v in top)
        sentence = f"{logging_share:.0%} went to logging (metrics reduced and written to the loggers between steps)"
        if callbacks_share >= 0.01:
            sentence += f" and {callbacks_share:.0%} to callbacks' hooks ({named})"
        remedies = [f"log less often: log_every_n_steps={every * factor} (now {every})"]
        if callbacks_share > logging_share and top:
            remedies.append(f"make the costliest callbacks cheaper or less frequent ({named}); a progress bar: "
                            "TQDMProgressBar(refresh_rate=...) or enable_progress_bar=False")
        return (Cause("logging_overhead", _confidence(share, self.thresholds.logging_share), evidence), sentence,
                remedies)

    def _checkpointing(self, run: RunTimes, settings: RunSettings, wall: float) -> Overhead | None:
        found = self._overhead(run, "checkpointing", self.thresholds.checkpoint_share, wall, run.checkpoint_s)
        if found is None:
            return None
        cost, share = found
        each = cost / max(1, run.checkpoints)
        evidence = {"checkpointing_share": round(share, 4), "checkpoints": run.checkpoints,
                    "checkpoint_ms_each": round(1000 * each, 1)}
        sentence = f"{share:.0%} went to writing {run.checkpoints} checkpoints ({1000 * each:.0f} ms each)"
        return (Cause("checkpointing_overhead", _confidence(share, self.thresholds.checkpoint_share), evidence),
                sentence, ["checkpoint less often (ModelCheckpoint(every_n_train_steps=... or every_n_epochs=...)), "
                           "keep fewer (save_top_k) or smaller ones (save_weights_only=True)"])
