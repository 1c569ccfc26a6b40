"""The records the suite produces: findings from rules, diagnoses and interventions in the report.

Pure data, no Lightning: rules return :class:`Finding` (with its ranked :class:`Cause` records);
callbacks stamp them with the step, epoch and source into :class:`Diagnosis`; every change a remedy
makes is an :class:`Intervention`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_convergence.rules.advice import render_message
from lightning_convergence.rules.findings import (
    CAUSES,
    DIAGNOSIS_KINDS,
    INTERVENTION_ACTIONS,
    SEVERITIES,
    Cause,
    Finding,
    as_causes,
)


def _json_safe(value: Any) -> Any:
    """Plain JSON values: non-finite floats become strings ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class Diagnosis:
    """One entry of the report's ``diagnoses`` list (schema ``version`` 1).

    ``observation``, ``causes`` (``{"cause", "confidence", "evidence"}`` dicts, most likely first)
    and ``remedies`` are the parts; ``message`` is rendered from them when it is not given. A
    report written before the parts existed loads with them empty and its ``message`` as it was.

    Example:
        >>> d = Diagnosis("plateau", "warning", step=5, epoch=0, source="Doc", observation="Flat for 30 steps.",
        ...               causes=[{"cause": "learning_rate_too_low", "confidence": 0.6, "evidence": {}}],
        ...               remedies=["raise the learning rate"])
        >>> d.message
        'Flat for 30 steps. Likely causes: a learning rate that is too low (or zero, from a schedule). Try: 1) raise the learning rate.'
        >>> Diagnosis.from_dict(d.to_dict()) == d
        True
    """

    kind: str
    severity: str
    step: int
    epoch: int
    source: str
    message: str = ""
    layer: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    observation: str = ""
    causes: list[dict[str, Any]] = field(default_factory=list)
    remedies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in DIAGNOSIS_KINDS:
            raise ValueError(f"`kind` must be one of {DIAGNOSIS_KINDS}, got {self.kind!r}.")
        if self.severity not in SEVERITIES:
            raise ValueError(f"`severity` must be one of {SEVERITIES}, got {self.severity!r}.")
        causes = [c.to_dict() for c in as_causes(self.causes)]  # validates names and confidences
        remedies = [str(r) for r in self.remedies]
        object.__setattr__(self, "causes", causes)
        object.__setattr__(self, "remedies", remedies)
        if not self.message:
            message = render_message(self.observation, [c["cause"] for c in causes], remedies)
            object.__setattr__(self, "message", message)

    @property
    def top_cause(self) -> dict[str, Any] | None:
        """The most likely cause, if any."""
        return self.causes[0] if self.causes else None

    @classmethod
    def from_finding(cls, finding: Finding, step: int, epoch: int, source: str) -> Diagnosis:
        return cls(
            kind=finding.kind,
            severity=finding.severity,
            step=finding.step if finding.step is not None else step,
            epoch=epoch,
            source=source,
            message=finding.message,
            layer=finding.layer,
            evidence=dict(finding.evidence),
            observation=finding.observation,
            causes=[c.to_dict() for c in finding.causes],
            remedies=list(finding.remedies),
        )

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Intervention:
    """One entry of the report's ``interventions`` list: a change a remedy made to training."""

    action: str
    step: int
    source: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in INTERVENTION_ACTIONS:
            raise ValueError(f"`action` must be one of {INTERVENTION_ACTIONS}, got {self.action!r}.")

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Intervention:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
