"""The run's convergence log: the diagnoses and interventions of every callback in one Trainer.

Diagnoses are rate-limited: a (kind, layer) pair is recorded at most once per window of optimizer
steps unless its severity rises, so a long run is not flooded; what was held back is counted in the
summary. Interventions are always recorded.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Any

from lightning_convergence.recorder.records import SEVERITIES, Diagnosis, Intervention

REPORT_VERSION = 1
REPORT_FILENAME = "convergence_report.json"


def rank_causes(diagnoses: list[Diagnosis]) -> list[dict[str, Any]]:
    """The run's likely causes, most likely first: each cause named by a warning-or-worse
    diagnosis, with its best confidence and the indices (into ``diagnoses``) of those naming it.

    Ties in confidence go to the cause named more often, then to the one named first. Info notes
    are left out: they did no harm.

    Example:
        >>> from lightning_convergence.recorder.records import Diagnosis
        >>> def cause(name, confidence):
        ...     return {"cause": name, "confidence": confidence, "evidence": {}}
        >>> ds = [Diagnosis("oscillation", "warning", 3, 0, "Doc", observation="Swings.",
        ...                 causes=[cause("learning_rate_too_high", 0.5), cause("batch_size_too_small", 0.3)]),
        ...       Diagnosis("divergence", "critical", 9, 0, "Doc", observation="Up.",
        ...                 causes=[cause("learning_rate_too_high", 0.8)])]
        >>> rank_causes(ds)
        [{'cause': 'learning_rate_too_high', 'confidence': 0.8, 'diagnoses': [0, 1]}, {'cause': 'batch_size_too_small', 'confidence': 0.3, 'diagnoses': [0]}]
    """
    best: dict[str, float] = {}
    named: dict[str, list[int]] = {}
    for index, diagnosis in enumerate(diagnoses):
        if diagnosis.severity == "info":
            continue
        for cause in diagnosis.causes:
            name = cause["cause"]
            best[name] = max(best.get(name, 0.0), float(cause["confidence"]))
            if index not in named.setdefault(name, []):
                named[name].append(index)
    order = sorted(best, key=lambda name: (-best[name], -len(named[name]), named[name][0]))
    return [{"cause": name, "confidence": best[name], "diagnoses": named[name]} for name in order]


ACTING = frozenset({"lr_scale", "rollback", "reinit_units", "stop", "undo", "skip_step"})
"""Interventions that answered a problem (clipping and a warmup the user asked for are routine)."""


def remedied(interventions: list[Intervention], final_loss: float | None) -> str | None:
    """What was done about the run's problems and whether it worked, in one sentence, or
    ``None`` when nothing was.

    Example:
        >>> from lightning_convergence.recorder.records import Intervention
        >>> acts = [Intervention("lr_scale", 150, "PlateauAdvisor", {"reason": "learning_rate_too_low",
        ...                                                          "loss_before": 2.21})]
        >>> remedied(acts, final_loss=0.35)
        'lr_scale (learning_rate_too_low) at step 150; the smoothed training loss went from 2.21 before the first to 0.35 at the end: it helped.'
    """
    acted = [i for i in interventions if i.action in ACTING]
    if not acted:
        return None
    def what(i: Intervention) -> str:
        reason = i.detail.get("reason")
        return f"{i.action} ({reason}) at step {i.step}" if reason else f"{i.action} at step {i.step}"

    done = "; ".join(what(i) for i in acted[:5])
    done += f"; and {len(acted) - 5} more" if len(acted) > 5 else ""
    before = next((i.detail["loss_before"] for i in acted if isinstance(i.detail.get("loss_before"), (int, float))), None)
    if before is None or final_loss is None or not (math.isfinite(before) and math.isfinite(final_loss)):
        return f"{done}."
    verdict = "it helped" if final_loss < before else "it did not help"
    return (f"{done}; the smoothed training loss went from {before:.4g} before the first to {final_loss:.4g} "
            f"at the end: {verdict}.")


class ConvergenceLog:
    """Collects diagnoses and interventions and writes ``convergence_report.json``.

    Args:
        window_steps: a (kind, layer) pair is recorded at most once per this many optimizer
            steps, unless its severity rises.

    Example:
        >>> from lightning_convergence.recorder.records import Diagnosis
        >>> log = ConvergenceLog(window_steps=100)
        >>> d = Diagnosis("plateau", "warning", step=5, epoch=0, source="Doc", message="flat")
        >>> log.add_diagnosis(d), log.add_diagnosis(d)
        (True, False)
        >>> log.to_report(steps=10)["summary"]["healthy"]
        False
    """

    def __init__(self, window_steps: int = 500) -> None:
        if isinstance(window_steps, bool) or not isinstance(window_steps, int) or window_steps < 1:
            raise ValueError(f"`window_steps` must be a positive int, got {window_steps!r}.")
        self.window_steps = window_steps
        self.diagnoses: list[Diagnosis] = []
        self.interventions: list[Intervention] = []
        self.suppressed: Counter[str] = Counter()
        # Extra top-level sections of the report, by name (``preflight``: PreflightCheck's checks).
        self.sections: dict[str, Any] = {}
        self._last_emitted: dict[tuple[str, str | None], tuple[int, int]] = {}

    def add_diagnosis(self, diagnosis: Diagnosis) -> bool:
        """Record ``diagnosis`` unless its (kind, layer) was recorded within the window.

        Returns:
            Whether it was recorded (and so should be shown on the console and TensorBoard).
        """
        key = (diagnosis.kind, diagnosis.layer)
        rank = SEVERITIES.index(diagnosis.severity)
        previous = self._last_emitted.get(key)
        if previous is not None:
            last_step, last_rank = previous
            if diagnosis.step - last_step < self.window_steps and rank <= last_rank:
                self.suppressed[diagnosis.kind] += 1
                return False
        self._last_emitted[key] = (diagnosis.step, rank)
        self.diagnoses.append(diagnosis)
        return True

    def add_intervention(self, intervention: Intervention) -> None:
        self.interventions.append(intervention)

    def records_from(self, source: str) -> dict[str, list[dict[str, Any]]]:
        """This source's records as plain dicts, for a callback's checkpointed state."""
        return {
            "diagnoses": [d.to_dict() for d in self.diagnoses if d.source == source],
            "interventions": [i.to_dict() for i in self.interventions if i.source == source],
        }

    def restore(self, records: dict[str, list[dict[str, Any]]]) -> None:
        """Put back records saved by :meth:`records_from` (on resume), without duplicates."""
        known = {json.dumps(d.to_dict(), sort_keys=True) for d in self.diagnoses}
        for data in records.get("diagnoses", []):
            diagnosis = Diagnosis.from_dict(data)
            if json.dumps(diagnosis.to_dict(), sort_keys=True) not in known:
                self.diagnoses.append(diagnosis)
                self._last_emitted[(diagnosis.kind, diagnosis.layer)] = (
                    diagnosis.step,
                    SEVERITIES.index(diagnosis.severity),
                )
        known_i = {json.dumps(i.to_dict(), sort_keys=True) for i in self.interventions}
        for data in records.get("interventions", []):
            intervention = Intervention.from_dict(data)
            if json.dumps(intervention.to_dict(), sort_keys=True) not in known_i:
                self.interventions.append(intervention)

    def headline(self, steps: int) -> str:
        """One sentence for the summary."""
        serious = [d for d in self.diagnoses if d.severity != "info"]
        acted = [i for i in self.interventions if i.action in ACTING]
        if not serious and acted:
            return (f"Acted on: {len(acted)} intervention{'' if len(acted) == 1 else 's'} in {steps} optimizer steps, "
                    f"no warning left (see summary.remedied).")
        if not serious:
            notes = f" ({len(self.diagnoses)} informational notes)" if self.diagnoses else ""
            return f"Healthy: no warnings in {steps} optimizer steps{notes}."
        worst = max(serious, key=lambda d: (SEVERITIES.index(d.severity), -d.step))
        kinds = sorted({d.kind for d in serious})
        n = len(self.interventions)
        acted = f"; {n} intervention{'' if n == 1 else 's'}" if n else ""
        return (
            f"{len(serious)} problem{'' if len(serious) == 1 else 's'} ({', '.join(kinds)}) in {steps} "
            f"optimizer steps; the most "
            f"severe: {worst.kind} ({worst.severity}) at step {worst.step}{acted}."
        )

    def to_report(self, steps: int, final_loss: float | None = None) -> dict[str, Any]:
        """The report as plain JSON-ready data (schema ``version`` 1). ``final_loss``: the
        smoothed training loss at the end, for ``summary.remedied``. A run whose problems were
        acted on is not healthy, whatever the severity its findings ended at."""
        diagnoses = sorted(self.diagnoses, key=lambda d: d.step)
        acted = remedied(self.interventions, final_loss)
        return {
            "version": REPORT_VERSION,
            **{name: section for name, section in self.sections.items()},
            "diagnoses": [d.to_dict() for d in diagnoses],
            "interventions": [i.to_dict() for i in sorted(self.interventions, key=lambda i: i.step)],
            "summary": {
                "steps": steps,
                "healthy": not any(d.severity != "info" for d in self.diagnoses) and acted is None,
                "headline": self.headline(steps),
                "causes": rank_causes(diagnoses),
                "remedied": acted,
                "suppressed": dict(self.suppressed),
            },
        }

    def write_json(self, directory: str, steps: int, final_loss: float | None = None) -> str:
        """Write ``convergence_report.json`` into ``directory`` atomically; return its path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, REPORT_FILENAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.to_report(steps, final_loss), handle, indent=2, allow_nan=False)
        os.replace(tmp, path)
        return path
