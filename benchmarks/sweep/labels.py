"""Label every run from its outcome, then score the suite against the labels.

**Labels** come from the runs' final validation loss (``outcome``, in the clean data's units),
never from what the suite said. For each setup (architecture x optimiser), the best learning rate
is the clean one with the lowest median outcome over seeds; a run *converged* if its outcome is
at most ``CONVERGED_FACTOR`` x that median, otherwise it *failed*, with the cause
``learning_rate_too_high`` or ``learning_rate_too_low`` by the side of the best LR it lies on, or
the cause of the error injected into it. A clean run at the best LR that failed (an unlucky
seed) has no cause and is counted apart.

**Scores**, per half: *false alarms* (a converged run with a warning-or-worse diagnosis),
*recall* (a failed run with one), *right top cause* (a failed run whose report's
``summary.causes`` ranks its label's cause first) and *in the top two*.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks.sweep.setups import ERRORS, TUNING

CONVERGED_FACTOR = 1.25
SEVERE = ("warning", "critical")
TIMING_KINDS = frozenset({"slow_data_loading", "slow_training"})  # judged on wall-clock time

Record = dict[str, Any]


@dataclass(frozen=True)
class Label:
    status: str  # "converged", "failed" or "unlucky" (failed at the best LR)
    cause: str | None
    reference: float  # the setup's best median outcome
    best_lr: float


def _outcome(record: Record) -> float:
    value = record.get("outcome")
    return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf


def best_lrs(records: list[Record]) -> dict[tuple[str, str], tuple[float, float]]:
    """Per setup: (best LR, its median outcome over seeds), from the clean runs."""
    by_lr: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in records:
        if r["error"] is None and not r.get("remediate"):
            by_lr.setdefault((r["arch"], r["optimizer"]), {}).setdefault(r["lr"], []).append(_outcome(r))
    return {setup: min(((lr, statistics.median(v)) for lr, v in lrs.items()), key=lambda p: p[1])
            for setup, lrs in by_lr.items()}


def label(record: Record, best: dict[tuple[str, str], tuple[float, float]]) -> Label:
    best_lr, reference = best[(record["arch"], record["optimizer"])]
    if _outcome(record) <= CONVERGED_FACTOR * reference:
        return Label("converged", None, reference, best_lr)
    if record["error"] is not None:
        return Label("failed", ERRORS[record["error"]][0], reference, best_lr)
    if record["lr"] == best_lr:
        return Label("unlucky", None, reference, best_lr)
    cause = "learning_rate_too_high" if record["lr"] > best_lr else "learning_rate_too_low"
    return Label("failed", cause, reference, best_lr)


def alarms(record: Record, timing: bool = True) -> list[str]:
    """The kinds of the run's warning-or-worse diagnoses (``timing=False`` leaves out the kinds
    judged on wall-clock time)."""
    return [d["kind"] for d in record["diagnoses"] if d["severity"] in SEVERE
            and (timing or d["kind"] not in TIMING_KINDS)]


def named(record: Record) -> list[str]:
    """The run-level ranking of causes, most likely first."""
    return [c["cause"] for c in record.get("summary_causes") or []]


@dataclass
class HalfScore:
    converged: int = 0
    false_alarms: int = 0
    false_alarms_no_timing: int = 0
    failed: int = 0
    recalled: int = 0
    top_cause: int = 0
    top_two: int = 0
    unlucky: int = 0
    alarm_kinds: Counter = field(default_factory=Counter)  # kinds raised on converged runs
    confusions: Counter = field(default_factory=Counter)  # (label cause, named top cause) on wrong ones
    missed: Counter = field(default_factory=Counter)  # label causes of failed runs without a warning


def score(records: list[Record]) -> dict[str, HalfScore]:
    """Scores of the ``"tuning"`` and ``"held_out"`` halves (runs that crashed are left out)."""
    best = best_lrs(records)
    halves = {"tuning": HalfScore(), "held_out": HalfScore()}
    for r in records:
        if r.get("crash") or r.get("remediate"):
            continue
        s = halves["tuning" if r["arch"] in TUNING else "held_out"]
        lab = label(r, best)
        raised = alarms(r)
        if lab.status == "unlucky":
            s.unlucky += 1
        elif lab.status == "converged":
            s.converged += 1
            s.false_alarms += bool(raised)
            s.false_alarms_no_timing += bool(alarms(r, timing=False))
            s.alarm_kinds.update(set(raised))
        else:
            s.failed += 1
            s.recalled += bool(raised)
            if not raised:
                s.missed[lab.cause] += 1
            ranking = named(r)
            right = bool(ranking) and ranking[0] == lab.cause
            s.top_cause += right
            s.top_two += lab.cause in ranking[:2]
            if not right:
                s.confusions[(lab.cause, ranking[0] if ranking else "none")] += 1
    return halves


HELPED, HARMED = 0.8, 1.1  # remediated outcome over observed: at most 0.8x helped, above 1.1x harmed


@dataclass
class RemedyScore:
    runs: int = 0
    acted: int = 0  # runs where the suite did something (an intervention other than a clip)
    helped: int = 0
    harmed: int = 0
    harmed_runs: list = field(default_factory=list)
    actions: Counter = field(default_factory=Counter)  # (action, reason) over the acted runs


def _acted(record: Record) -> list[tuple[str, str | None]]:
    return [(i["action"], i.get("reason")) for i in record.get("interventions", []) if i["action"] != "clip"]


def remedy_scores(records: list[Record]) -> dict[str, RemedyScore]:
    """Observed against remediated outcome, per label of the observed run (a failed run's cause,
    or ``converged``): helped (remediated at most 0.8x observed), harmed (above 1.1x)."""
    best = best_lrs(records)
    observed = {(r["arch"], r["optimizer"], r["lr"], r["seed"], r["error"]): r for r in records
                if not r.get("remediate") and not r.get("crash")}
    scores: dict[str, RemedyScore] = {}
    for r in records:
        twin = observed.get((r["arch"], r["optimizer"], r["lr"], r["seed"], r["error"]))
        if not r.get("remediate") or r.get("crash") or twin is None:
            continue
        lab = label(twin, best)
        s = scores.setdefault(lab.cause or lab.status, RemedyScore())
        s.runs += 1
        before, after = _outcome(twin), _outcome(r)
        acted = _acted(r)
        s.acted += bool(acted)
        s.actions.update(set(acted))
        if math.isfinite(after) and after <= HELPED * before and before > 0:  # NaN -> NaN helped nothing
            s.helped += 1
        elif after > HARMED * before or (math.isinf(after) and not math.isinf(before)):
            s.harmed += 1
            s.harmed_runs.append((r["arch"], r["optimizer"], r["lr"], r["error"], r["seed"], before, after, acted))
    return scores
