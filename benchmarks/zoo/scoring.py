"""Scores of the zoo, from the runs' records (plain dicts, see ``runner.RunRecord``).

- **hit**: a diagnosis of one of the fault's expected kinds at severity warning or critical.
  Detection is judged on the observe run (the suite at its defaults, not acting), and reported
  for the remediated run too.
- **latency**: the first hit's ``step`` minus the fault's onset, in optimizer steps. ``step`` is
  the step the suite attributes the problem to; **noticed** is the step at which the diagnosis
  entered the run's log (windowed rules decide at the end of a logging window, every 10 steps
  here), also minus the onset. **acted**: the remediated run's first intervention at or after the
  onset (clip, skip_step, lr_scale, ...), minus the onset.
- **false alarm**: any warning or critical diagnosis on a healthy control's observe run (the
  remediated runs and the fault-free references are reported beside it).
- **recovered**: the remediated run's final validation loss is at most ``RECOVERY_FACTOR`` x the
  reference's, for faults the suite has a remedy for.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from benchmarks.zoo.scenarios import DEV_SEEDS, RECOVERY_FACTOR, SCENARIOS, Scenario

SEVERE = ("warning", "critical")

Record = dict[str, Any]


def severe(record: Record) -> list[tuple[dict[str, Any], int | None]]:
    """The run's warning/critical diagnoses with their noticed step."""
    return [(d, n) for d, n in zip(record["diagnoses"], record["noticed"]) if d["severity"] in SEVERE]


@dataclass
class Hit:
    kind: str
    step: int
    noticed: int | None
    latency: int
    noticed_latency: int | None


def first_hit(record: Record, scenario: Scenario) -> Hit | None:
    """The earliest (by step) warning+ diagnosis of an expected kind, or None."""
    hits = [(d, n) for d, n in severe(record) if d["kind"] in scenario.expect]
    if not hits:
        return None
    d, n = min(hits, key=lambda h: (h[0]["step"], h[1] if h[1] is not None else math.inf))
    onset = scenario.onset or 0
    return Hit(d["kind"], d["step"], n, d["step"] - onset, None if n is None else n - onset)


def first_action(record: Record, onset: int) -> tuple[str, int] | None:
    """The remediated run's first intervention at or after ``onset``: (action, step)."""
    actions = [(i["step"], i["action"]) for i in record["interventions"]
               if i["step"] >= onset and not (i["action"] == "warmup")]
    if not actions:
        return None
    step, action = min(actions)
    return action, step


@dataclass
class FaultSeed:
    """One fault on one seed: both runs and what they scored."""

    scenario: Scenario
    seed: int
    observe: Record
    remediate: Record | None
    reference: Record | None
    hit: Hit | None = None
    remediate_hit: Hit | None = None
    action: tuple[str, int] | None = None
    ratio: float | None = None  # remediated final val loss / reference's
    recovered: bool | None = None
    others: list[tuple[dict[str, Any], int | None]] = field(default_factory=list)  # other warnings (observe)

    @property
    def held_out(self) -> bool:
        return self.seed not in DEV_SEEDS


def score_fault(scenario: Scenario, seed: int, runs: dict[tuple[str, str, int], Record]) -> FaultSeed:
    observe = runs[(scenario.name, "observe", seed)]
    remediate = runs.get((scenario.name, "remediate", seed))
    reference = runs.get((scenario.reference, "observe", seed)) if scenario.reference else None
    result = FaultSeed(scenario, seed, observe, remediate, reference)
    result.hit = first_hit(observe, scenario)
    result.others = [(d, n) for d, n in severe(observe) if d["kind"] not in scenario.expect]
    if remediate is not None:
        result.remediate_hit = first_hit(remediate, scenario)
        result.action = first_action(remediate, scenario.onset or 0)
        if reference is not None:
            ref, rem = reference["val_loss"], remediate["val_loss"]
            if math.isfinite(ref) and ref > 0:
                result.ratio = rem / ref if math.isfinite(rem) else math.inf
                if scenario.remediable:
                    result.recovered = result.ratio <= RECOVERY_FACTOR
    return result


@dataclass
class ControlSeed:
    """A healthy control (or a reference) on one seed: its warnings are false alarms."""

    scenario: Scenario
    seed: int
    observe: Record
    remediate: Record | None
    alarms: list[tuple[dict[str, Any], int | None]]
    remediate_alarms: list[tuple[dict[str, Any], int | None]]

    @property
    def held_out(self) -> bool:
        return self.seed not in DEV_SEEDS


def score_control(scenario: Scenario, seed: int, runs: dict[tuple[str, str, int], Record]) -> ControlSeed:
    observe = runs[(scenario.name, "observe", seed)]
    remediate = runs.get((scenario.name, "remediate", seed))
    return ControlSeed(scenario, seed, observe, remediate, severe(observe), severe(remediate) if remediate else [])


@dataclass
class Scores:
    faults: list[FaultSeed]
    controls: list[ControlSeed]
    references: list[ControlSeed]
    seeds: list[int]

    def recall(self, held_out: bool | None = None, variant: str = "observe") -> tuple[int, int]:
        rows = [f for f in self.faults if held_out is None or f.held_out == held_out]
        hits = [f for f in rows if (f.hit if variant == "observe" else f.remediate_hit) is not None]
        return len(hits), len(rows)

    def right_causes(self, held_out: bool | None = None) -> tuple[int, int]:
        """Observe runs of faults that plant a cause whose first warning-or-worse diagnosis names
        one of those causes first (a run with no warning counts as wrong)."""
        rows = [f for f in self.faults if f.scenario.causes and (held_out is None or f.held_out == held_out)]
        right = 0
        for f in rows:
            warned = [d for d, _ in severe(f.observe)]
            first = min(warned, key=lambda d: d["step"]) if warned else None
            causes = first.get("causes") if first else None
            right += bool(causes) and causes[0]["cause"] in f.scenario.causes
        return right, len(rows)

    def false_alarm_runs(self, held_out: bool | None = None) -> tuple[int, int]:
        rows = [c for c in self.controls if held_out is None or c.held_out == held_out]
        return sum(1 for c in rows if c.alarms), len(rows)

    def prompt_latencies(self) -> list[FaultSeed]:
        return [f for f in self.faults if f.scenario.prompt]

    def recovery(self) -> tuple[int, int]:
        rows = [f for f in self.faults if f.recovered is not None]
        return sum(1 for f in rows if f.recovered), len(rows)

    def recovered_scenarios(self) -> tuple[int, int]:
        """Remediable faults recovered on most of their seeds."""
        names = sorted({f.scenario.name for f in self.faults if f.recovered is not None})
        good = 0
        for name in names:
            rows = [f for f in self.faults if f.scenario.name == name and f.recovered is not None]
            good += sum(f.recovered for f in rows) * 2 > len(rows)
        return good, len(names)


def score(records: list[Record]) -> Scores:
    runs = {(r["scenario"], r["variant"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records})
    present = [s for s in SCENARIOS.values() if any(k[0] == s.name for k in runs)]
    faults, controls, references = [], [], []
    for scenario in present:
        for seed in seeds:
            if (scenario.name, "observe", seed) not in runs:
                continue
            if scenario.role == "fault":
                faults.append(score_fault(scenario, seed, runs))
            elif scenario.role == "healthy":
                controls.append(score_control(scenario, seed, runs))
            else:
                references.append(score_control(scenario, seed, runs))
    return Scores(faults, controls, references, seeds)


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
