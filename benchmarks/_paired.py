"""Paired, alternating repeats: run every variant once per repeat in a rotated order, rerun a
measurement that other processes disturbed, and summarise each variant as ratios to a baseline
measured in the same repeat.

Used by ``bench_gradient_monitor.py`` for whole ``Trainer.fit`` runs (:func:`run_paired`), for
functions timed alone (:func:`measure_candidates`), and for the hooks timed inside the fits
(:func:`hook_summary`). Nothing here imports ``lightning_convergence``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

try:  # run as a script: benchmarks/ is on sys.path
    from _timing import ForeignCpu, median, pct, rotated, wait_for_quiet
except ImportError:  # imported as benchmarks._paired
    from benchmarks._timing import ForeignCpu, median, pct, rotated, wait_for_quiet


@dataclass
class Disturbance:
    """How much other processes got in the way: seconds waited for quiet, reruns left."""

    retries_left: int
    max_wait_s: float
    threshold: float
    waited_s: float = 0.0
    reruns: int = 0

    def wait(self) -> None:
        self.waited_s += wait_for_quiet(self.max_wait_s)

    def should_rerun(self, load: float | None) -> bool:
        if load is None or load <= self.threshold or self.retries_left == 0:
            return False
        self.retries_left -= 1
        self.reruns += 1
        return True


@dataclass
class FitResult:
    """One timed fit. Times in seconds; ``hooks[name][i]`` is that hook's time at step i."""

    intervals: list[float]
    first_step: int
    foreign_cores: float | None
    hooks: dict[str, list[float]] = field(default_factory=dict)
    histogram_ms: float | None = None
    log_every: int = 50

    def special_steps(self) -> set[int]:
        """Logging steps of the window, (s + 1) % log_every == 0, and the step after each."""
        steps = range(self.first_step, self.first_step + len(self.intervals))
        return {s for s in steps if (s + 1) % self.log_every == 0 or (s > 0 and s % self.log_every == 0)}

    def step_ms(self) -> float:
        """Robust mean step: median ordinary step plus the logging steps' extra, spread over all."""
        special = self.special_steps()
        ordinary = [t for i, t in enumerate(self.intervals) if self.first_step + i not in special]
        steady = median(ordinary)
        extra = sum(self.intervals[s - self.first_step] - steady for s in special)
        return (steady + extra / len(self.intervals)) * 1e3

    def median_ms(self) -> float:
        return median(self.intervals) * 1e3

    def mean_ms(self) -> float:
        return statistics.fmean(self.intervals) * 1e3


# fit(variant, timed steps, warm-up steps, last repeat) -> FitResult
FitFunction = Callable[[str, int, int, bool], FitResult]


def run_paired(variants: Sequence[str], fit: FitFunction, repeats: int, warmup_rounds: int, steps: int,
               warmup_steps: int, disturbance: Disturbance) -> dict[str, list[FitResult]]:
    """Every repeat runs each variant once, rotated; warm-up rounds (short fits) are discarded."""
    fits: dict[str, list[FitResult]] = {v: [] for v in variants}
    for round_index in range(warmup_rounds + repeats):
        repeat = round_index - warmup_rounds
        label = "warm-up" if repeat < 0 else f"repeat {repeat + 1}/{repeats}"
        # The warm-up round only warms the process up (imports, allocator, TensorBoard): short fits.
        n, warmup = (min(steps, 5), 2) if repeat < 0 else (steps, warmup_steps)
        for variant in rotated(variants, round_index):
            while True:
                disturbance.wait()
                result = fit(variant, n, warmup, repeat == repeats - 1)
                load = result.foreign_cores
                load_text = "n/a" if load is None else f"{load:.2f}"
                print(f"  [{label}] {variant:18s} step {result.step_ms():7.1f} ms  (mean {result.mean_ms():7.1f}, "
                      f"median {result.median_ms():7.1f}; other processes {load_text} cores)", flush=True)
                if repeat < 0 or not disturbance.should_rerun(load):
                    break
                print(f"  [{label}] {variant:18s} disturbed by other processes: running it again", flush=True)
            if repeat >= 0:
                fits[variant].append(result)
    return fits


def summarise_paired(fits: dict[str, list[FitResult]], baseline: str) -> dict[str, Any]:
    """Per variant: medians over repeats and the paired per-repeat ratios to ``baseline``."""
    out: dict[str, Any] = {}
    for v, runs in fits.items():
        step = [f.step_ms() for f in runs]
        ratios = [f.step_ms() / b.step_ms() for f, b in zip(runs, fits[baseline])]
        loads = [f.foreign_cores for f in runs if f.foreign_cores is not None]
        out[v] = {
            "step_ms": median(step),
            "step_ms_per_repeat": step,
            "mean_ms_per_repeat": [f.mean_ms() for f in runs],
            "median_ms_per_repeat": [f.median_ms() for f in runs],
            "median_step_ms": median([f.median_ms() for f in runs]),
            f"ratio_to_{baseline}": median(ratios),
            f"ratio_to_{baseline}_per_repeat": ratios,
            "foreign_cores_max": max(loads) if loads else None,
        }
    return out


def print_training(result: dict[str, Any], repeats: int) -> None:
    print(f"\n== 1. Training step (Trainer.fit on CPU; {result['timed_steps']} timed steps per fit after "
          f"{result['warmup_steps']} warm-up; median of {repeats} paired repeats) ==")
    print(f"{'variant':18s} {'step ms':>8s} {'median ms':>10s} {'vs bare':>8s}  {'other cores':>11s}  "
          "per repeat vs bare")
    for v, row in result["variants"].items():
        load = row["foreign_cores_max"]
        load_text = "n/a" if load is None else f"<= {load:.2f}"
        spread = " ".join(pct(r) for r in row["ratio_to_bare_per_repeat"])
        print(f"{v:18s} {row['step_ms']:8.1f} {row['median_step_ms']:10.1f} {pct(row['ratio_to_bare']):>8s}  "
              f"{load_text:>11s}  {spread}")
    print("step ms: median ordinary step + the logging steps' extra spread over the window (see docstring);\n"
          "median ms: median step (no logging step); vs bare: median of paired per-repeat ratios of step ms;\n"
          "other cores: CPU other processes used during the timed windows (max over repeats).")


def time_call(call: Callable[[], Any], calls: int, evict: Tensor | None) -> float:
    """Mean milliseconds of ``call``; with ``evict``, each call follows a read of that buffer."""
    total = 0.0
    for _ in range(calls):
        if evict is not None:
            evict.sum()  # streams the buffer through the caches, pushing other data out
        start = time.perf_counter()
        call()
        total += time.perf_counter() - start
    return total * 1e3 / calls


def measure_candidates(candidates: dict[str, Callable[[], Any]], repeats: int, disturbance: Disturbance,
                       calls: Callable[[str], int], evict_mb: int = 512) -> dict[str, Any]:
    """Each candidate "hot" (repeated calls) and "cold" (after streaming ``evict_mb`` MB), in rounds
    rotated like :func:`run_paired` (round 0 is warm-up); ratios are to the first candidate."""
    names = list(candidates)
    evict = torch.ones(evict_mb * 2**18)  # float32
    samples: dict[str, dict[str, list[float]]] = {mode: {n: [] for n in names} for mode in ("hot", "cold")}
    round_index = 0
    while round_index <= repeats:
        disturbance.wait()
        probe = ForeignCpu()
        probe.start()
        row: dict[str, tuple[float, float]] = {}
        for name in rotated(names, round_index):
            call, n = candidates[name], calls(name)
            row[name] = (time_call(call, n, None), time_call(call, n, evict))
        if round_index > 0 and disturbance.should_rerun(probe.stop()):
            continue  # this round was disturbed: measure it again
        if round_index > 0:
            for name, (hot, cold) in row.items():
                samples["hot"][name].append(hot)
                samples["cold"][name].append(cold)
        round_index += 1
    out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {}
        for mode, by_name in samples.items():
            ratios = [s / f for s, f in zip(by_name[name], by_name[names[0]])]
            entry[mode] = {"ms": median(by_name[name]), "ratio_to_floor": median(ratios),
                           "ms_per_repeat": by_name[name]}
        out[name] = entry
    return out


def print_stats(result: dict[str, Any], repeats: int) -> None:
    print(f"\n== 2. Statistics pass alone ({result['tensors']} fp32 tensors, {result['values']:,} values; "
          f"median of {repeats} repeats) ==")
    print(f"{'candidate':38s} {'hot ms':>8s} {'x floor':>8s} {'cold ms':>9s} {'x floor':>8s}")
    for name, row in result["candidates"].items():
        hot, cold = row["hot"], row["cold"]
        print(f"{name:38s} {hot['ms']:8.2f} {hot['ratio_to_floor']:7.2f}x {cold['ms']:9.2f} "
              f"{cold['ratio_to_floor']:7.2f}x")


def hook_summary(fits: list[FitResult], names: list[str], bare_ms: float,
                 sample_every: int | None = None) -> dict[str, Any]:
    """The per-step total of the hooks ``names``: ordinary steps, each logging step, window mean.

    With ``sample_every`` (a callback that works on one step in that many, step % sample_every == 0),
    the ordinary steps are also split into sampled and unsampled ones, per hook as well: the
    ordinary median alone would show only the unsampled steps.
    """
    ordinary: list[float] = []
    per_hook: dict[str, list[float]] = {name: [] for name in names}
    special: dict[int, list[float]] = {}
    window_means: list[float] = []
    split: dict[bool, list[float]] = {True: [], False: []}
    split_per_hook: dict[bool, dict[str, list[float]]] = {k: {name: [] for name in names} for k in (True, False)}
    for fit in fits:
        steps = range(fit.first_step, fit.first_step + len(fit.intervals))
        totals = {s: sum(fit.hooks[name][s] for name in names) * 1e3 for s in steps}
        window_means.append(statistics.fmean(totals.values()))
        for s, ms in totals.items():
            if s in fit.special_steps():
                special.setdefault(s, []).append(ms)
            else:
                ordinary.append(ms)
                for name in names:
                    per_hook[name].append(fit.hooks[name][s] * 1e3)
                if sample_every:
                    sampled = s % sample_every == 0
                    split[sampled].append(ms)
                    for name in names:
                        split_per_hook[sampled][name].append(fit.hooks[name][s] * 1e3)
    out = {
        "ordinary_step_ms": median(ordinary),
        "ordinary_step_ms_per_hook": {name: median(v) for name, v in per_hook.items()},
        "special_steps_ms": {str(s): median(v) for s, v in sorted(special.items())},
        "window_mean_ms": median(window_means),
        "window_mean_fraction_of_bare": median(window_means) / bare_ms,
    }
    if sample_every:
        for sampled, key in ((True, "sampled"), (False, "unsampled")):
            out[f"{key}_step_ms"] = median(split[sampled])
            out[f"{key}_steps"] = len(split[sampled])
            out[f"{key}_step_ms_per_hook"] = {name: median(v) for name, v in split_per_hook[sampled].items()}
    return out


def hook_line(label: str, ms: float, tail: str = "", fmt: str = "8.2f") -> None:
    """``label`` padded to 56 characters, then milliseconds and ``tail``."""
    print(f"{label:56s}{ms:{fmt}} ms{tail}")


def special_step_lines(who: str, summary: dict[str, Any], log_every: int) -> None:
    """One line per logging step of the window and the step after it."""
    for step, ms in summary["special_steps_ms"].items():
        kind = "logging step" if (int(step) + 1) % log_every == 0 else "the step after"
        hook_line(f"{who}, step {step:>3s} ({kind:14s}):", ms)


def window_line(who: str, summary: dict[str, Any]) -> None:
    """The mean hook time per step over the timed window, and its share of the bare step."""
    hook_line(f"{who}, mean over the window:", summary["window_mean_ms"],
              f" ({summary['window_mean_fraction_of_bare'] * 100:.1f}% of the bare step)")
