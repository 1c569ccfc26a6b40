"""The records the suite produces: findings from rules, diagnoses and interventions in the report.

Pure data, no Lightning: rules return :class:`Finding`; callbacks stamp them with the step, epoch
and source into :class:`Diagnosis`; every change a remedy makes is an :class:`Intervention`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_convergence.rules.findings import DIAGNOSIS_KINDS, INTERVENTION_ACTIONS, SEVERITIES, Finding


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
    """One entry of the report's ``diagnoses`` list (schema ``version`` 1)."""

    kind: str
    severity: str
    step: int
    epoch: int
    source: str
    message: str
    layer: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Finding(self.kind, self.severity, self.message)  # validates kind and severity

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
