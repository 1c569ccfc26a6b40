"""The report as one timeline: diagnoses and interventions in step order, one line each."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal


def observation_of(diagnosis: Mapping[str, Any]) -> str:
    """What a report's diagnosis saw: its ``observation``; a report written before diagnoses had
    one gives its whole ``message`` instead (the prose is never cut apart).

    Example:
        >>> observation_of({"observation": "Flat for 30 steps.", "message": "Flat for 30 steps. Try: ..."})
        'Flat for 30 steps.'
        >>> observation_of({"message": "Flat. Try a lower LR."})
        'Flat. Try a lower LR.'
    """
    return diagnosis.get("observation") or diagnosis.get("message", "")


def top_cause_of(diagnosis: Mapping[str, Any]) -> str | None:
    """The name of a report's diagnosis's most likely cause; ``None`` when it names none.

    Example:
        >>> top_cause_of({"causes": [{"cause": "learning_rate_too_high", "confidence": 0.8, "evidence": {}}]})
        'learning_rate_too_high'
    """
    causes = diagnosis.get("causes") or []
    return causes[0].get("cause") if causes and isinstance(causes[0], Mapping) else None


def _compact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def compact_detail(detail: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """An intervention's detail as ``key=value`` pairs, floats to three significant digits.

    Example:
        >>> compact_detail({"reason": "plateau", "factor": [0.5], "lr_after": [0.0123456]})
        'reason=plateau, factor=[0.5], lr_after=[0.0123]'
    """
    return ", ".join(f"{key}={_compact(value)}" for key, value in detail.items() if key not in skip)


@dataclass(frozen=True)
class TimelineRow:
    """One line of the timeline.

    Args:
        step: the optimizer step.
        event: ``"diagnosis"`` or ``"intervention"``.
        level: a diagnosis's severity, or an intervention's action.
        kind: a diagnosis's kind, or the callback that made the intervention.
        layer: the layer concerned, when there is one.
        text: a diagnosis's observation, or an intervention's detail in one line.
        cause: a diagnosis's most likely cause, when it names one.
    """

    step: int
    event: Literal["diagnosis", "intervention"]
    level: str
    kind: str
    layer: str | None
    text: str
    cause: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_timeline(report: dict[str, Any]) -> list[TimelineRow]:
    """The diagnoses and interventions of ``report``, sorted by step (a diagnosis first on a tie).

    Example:
        >>> report = {"diagnoses": [{"kind": "plateau", "severity": "warning", "step": 40,
        ...                          "observation": "Flat for 30 steps.", "message": "Flat for 30 steps. Try: ...",
        ...                          "causes": [{"cause": "learning_rate_too_low", "confidence": 0.4}]}],
        ...           "interventions": [{"action": "lr_scale", "step": 40, "source": "PlateauAdvisor",
        ...                              "detail": {"factor": [0.5]}}]}
        >>> [(r.step, r.level, r.text, r.cause) for r in build_timeline(report)]
        [(40, 'warning', 'Flat for 30 steps.', 'learning_rate_too_low'), (40, 'lr_scale', 'factor=[0.5]', None)]
    """
    rows = [
        TimelineRow(int(d["step"]), "diagnosis", d["severity"], d["kind"], d.get("layer"),
                    observation_of(d), top_cause_of(d))
        for d in report["diagnoses"]
    ]
    for i in report["interventions"]:
        detail = i.get("detail") or {}
        layer = detail.get("layer") if isinstance(detail.get("layer"), str) else None
        rows.append(TimelineRow(int(i["step"]), "intervention", i["action"], i.get("source", "-"), layer,
                                compact_detail(detail, skip=("layer",) if layer else ())))
    return sorted(rows, key=lambda row: (row.step, row.event != "diagnosis"))
