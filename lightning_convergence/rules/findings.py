"""What rules return: the kinds of problem, severities, causes, and the :class:`Finding` record.

Pure data, no Lightning. This module owns three vocabularies of the public contract (see the
project's design): :data:`DIAGNOSIS_KINDS` (the symptom), :data:`CAUSES` (why) and
:data:`INTERVENTION_ACTIONS` (what a remedy did). Rules return :class:`Finding`; callbacks stamp
them with the step, epoch and source into the report's ``Diagnosis``
(``lightning_convergence.recorder.records``).

A finding keeps its parts as fields: the ``observation`` (what was seen, with the numbers), the
ranked ``causes`` and the ``remedies``. Its ``message`` is rendered from them, never the other way
round. A rule that has no evidence of its own about the cause leaves ``causes`` and ``remedies``
empty and gets the kind's usual ones from :mod:`lightning_convergence.rules.advice`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_convergence.rules import advice

DIAGNOSIS_KINDS: tuple[str, ...] = (
    "nonfinite_loss",
    "nonfinite_gradients",
    "exploding_gradients",
    "vanishing_gradients",
    "dead_units",
    "saturated_units",
    "plateau",
    "oscillation",
    "divergence",
    "overfitting",
    "no_learning",
    "amp_overflow",
    "nonfinite_inputs",
    "unnormalized_inputs",
    "invalid_targets",
    "poor_initialization",
    "slow_data_loading",
    "slow_training",
)
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
CAUSES: tuple[str, ...] = (
    # optimisation
    "learning_rate_too_high",
    "learning_rate_too_low",
    "missing_warmup",
    "missing_gradient_clipping",
    "batch_size_too_small",
    "optimizer_misconfigured",
    # numerics
    "low_precision_overflow",
    "non_differentiable_operation",
    "nonfinite_data",
    # data
    "unnormalized_inputs",
    "unnormalized_targets",
    "labels_mismatched",
    "label_noise",
    "invalid_targets",
    "unshuffled_data",
    "too_little_data",
    # model
    "bad_initialization",
    "dead_relu_units",
    "saturating_activations",
    "missing_normalization_or_residuals",
    "too_little_capacity",
    "too_much_capacity",
    # code
    "wrong_loss_for_task",
    "stale_gradients",
    "gradient_flow_cut",
    # speed (slow_training / slow_data_loading)
    "data_loader_bottleneck",
    "data_loader_restarts",
    "validation_too_frequent",
    "logging_overhead",
    "checkpointing_overhead",
    "host_sync_in_step",
    "low_device_utilization",
    "fp32_where_bf16_fits",
)
INTERVENTION_ACTIONS: tuple[str, ...] = (
    "clip",
    "skip_step",
    "lr_scale",
    "warmup",
    "reinit_units",
    "rollback",
    "stop",
    "undo",
)


@dataclass(frozen=True)
class Cause:
    """One likely cause of a finding.

    Args:
        cause: one of :data:`CAUSES`.
        confidence: how likely, from 0 to 1 (a finite number).
        evidence: the numbers this cause rests on (``{}`` for a kind's usual causes).

    Example:
        >>> Cause("learning_rate_too_high", 0.8, {"update_ratio_max": 0.31}).to_dict()["confidence"]
        0.8
        >>> Cause("bad_luck", 0.5)
        Traceback (most recent call last):
        ...
        ValueError: `cause` must be one of CAUSES (lightning_convergence.rules.findings), got 'bad_luck'.
    """

    cause: str
    confidence: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(
                f"`cause` must be one of CAUSES (lightning_convergence.rules.findings), got {self.cause!r}."
            )
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or not 0 <= c <= 1:
            raise ValueError(f"`confidence` must be a finite number in [0, 1], got {c!r}.")
        if not isinstance(self.evidence, Mapping):
            raise ValueError(f"`evidence` must be a dict, got {type(self.evidence).__name__}.")
        object.__setattr__(self, "confidence", float(c))
        object.__setattr__(self, "evidence", dict(self.evidence))

    def to_dict(self) -> dict[str, Any]:
        """``{"cause", "confidence", "evidence"}``, the report's shape."""
        return {"cause": self.cause, "confidence": self.confidence, "evidence": dict(self.evidence)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cause:
        return cls(data["cause"], data["confidence"], dict(data.get("evidence") or {}))


def as_causes(causes: Iterable[Cause | Mapping[str, Any]]) -> tuple[Cause, ...]:
    """``causes`` as :class:`Cause` records, most likely first (a stable sort: ties keep their order)."""
    records = [c if isinstance(c, Cause) else Cause.from_dict(c) for c in causes]
    return tuple(sorted(records, key=lambda c: -c.confidence))


def default_causes(kind: str) -> tuple[Cause, ...]:
    """The usual causes of ``kind``, ranked, from the advice table (no evidence of their own)."""
    return as_causes(Cause(name, confidence) for name, confidence in advice.USUAL_CAUSES.get(kind, ()))


@dataclass(frozen=True)
class Finding:
    """What a rule saw, before a callback stamps when and who.

    Args:
        kind: one of :data:`DIAGNOSIS_KINDS`.
        severity: one of :data:`SEVERITIES`.
        observation: what was seen, with the numbers (no causes, no advice: those are fields).
        layer: the layer concerned, when there is one.
        evidence: the numbers behind the finding.
        step: the optimizer step where the problem began, when the rule knows it (it may be
            earlier than the step at which the rule was evaluated).
        causes: the likely causes, as :class:`Cause` records or ``{"cause", "confidence",
            "evidence"}`` dicts; stored most likely first. Empty: the kind's usual causes.
        remedies: what to try, in order, as plain sentences. Empty: the kind's usual remedies.

    Raises:
        ValueError: an unknown kind, severity or cause name; a confidence outside [0, 1]; a
            warning or critical finding without a cause.

    Example:
        >>> f = Finding("exploding_gradients", "warning", "The gradient norm jumped to 812 (median 3.1).")
        >>> f.causes[0].cause, f.remedies[0]
        ('learning_rate_too_high', 'lower the learning rate')
        >>> f.message[:62]
        'The gradient norm jumped to 812 (median 3.1). Likely causes: a'
    """

    kind: str
    severity: str
    observation: str
    layer: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    causes: tuple[Cause, ...] = ()
    remedies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in DIAGNOSIS_KINDS:
            raise ValueError(f"`kind` must be one of {DIAGNOSIS_KINDS}, got {self.kind!r}.")
        if self.severity not in SEVERITIES:
            raise ValueError(f"`severity` must be one of {SEVERITIES}, got {self.severity!r}.")
        if not isinstance(self.observation, str):
            raise ValueError(f"`observation` must be a str, got {type(self.observation).__name__}.")
        causes = as_causes(self.causes) or default_causes(self.kind)
        if isinstance(self.remedies, str):
            raise ValueError("`remedies` must be a sequence of sentences, not one str.")
        remedies = tuple(str(r) for r in self.remedies) or tuple(advice.REMEDIES.get(self.kind, ()))
        if self.severity != "info" and not causes:
            raise ValueError(f"A {self.severity} finding must carry at least one cause ({self.kind}).")
        object.__setattr__(self, "causes", causes)
        object.__setattr__(self, "remedies", remedies)

    @property
    def message(self) -> str:
        """Plain words: the observation, the likely causes, what to try. A warning or critical
        finding whose causes no measurement supports says so."""
        told_apart = self.severity == "info" or any(c.evidence for c in self.causes)
        return advice.render_message(self.observation, [c.cause for c in self.causes], self.remedies, told_apart)

    @property
    def top_cause(self) -> Cause | None:
        """The most likely cause, if any."""
        return self.causes[0] if self.causes else None
