"""The report as one timeline: diagnoses and interventions in step order, one line each."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

# A sentence ends at . ! or ? followed by a space and a capital letter: "0.363" and "e.g. the"
# do not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def first_sentence(message: str) -> str:
    """The first sentence of a diagnosis message (what was seen, before causes and advice).

    Example:
        >>> first_sentence("The norm jumped to 14.4x its median (0.363). Likely causes: a high LR.")
        'The norm jumped to 14.4x its median (0.363).'
    """
    return _SENTENCE_END.split(message.strip(), maxsplit=1)[0]


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
        text: a diagnosis's first sentence, or an intervention's detail in one line.
    """

    step: int
    event: Literal["diagnosis", "intervention"]
    level: str
    kind: str
    layer: str | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_timeline(report: dict[str, Any]) -> list[TimelineRow]:
    """The diagnoses and interventions of ``report``, sorted by step (a diagnosis first on a tie).

    Example:
        >>> report = {"diagnoses": [{"kind": "plateau", "severity": "warning", "step": 40,
        ...                          "message": "Flat for 30 steps. Try a lower LR."}],
        ...           "interventions": [{"action": "lr_scale", "step": 40, "source": "PlateauAdvisor",
        ...                              "detail": {"factor": [0.5]}}]}
        >>> [(r.step, r.level, r.text) for r in build_timeline(report)]
        [(40, 'warning', 'Flat for 30 steps.'), (40, 'lr_scale', 'factor=[0.5]')]
    """
    rows = [
        TimelineRow(int(d["step"]), "diagnosis", d["severity"], d["kind"], d.get("layer"),
                    first_sentence(d["message"]))
        for d in report["diagnoses"]
    ]
    for i in report["interventions"]:
        detail = i.get("detail") or {}
        layer = detail.get("layer") if isinstance(detail.get("layer"), str) else None
        rows.append(TimelineRow(int(i["step"]), "intervention", i["action"], i.get("source", "-"), layer,
                                compact_detail(detail, skip=("layer",) if layer else ())))
    return sorted(rows, key=lambda row: (row.step, row.event != "diagnosis"))
