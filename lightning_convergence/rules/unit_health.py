"""Rules on unit activity: dead ReLU-family units and saturated sigmoid/tanh units, per layer.

Fed one :class:`LayerUnits` per activation site and window (numbers already on the host), the
rule returns findings. A layer is reported when its dead fraction (or saturation) crosses a
threshold in ``windows`` consecutive windows, so one unlucky window does not raise an alarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lightning_convergence.rules.findings import Finding
from lightning_convergence.rules._checks import check_fraction, check_positive_int
from lightning_convergence.rules.advice import advise


@dataclass(frozen=True)
class UnitThresholds:
    """Thresholds of :class:`UnitHealthRule` (fractions of a layer's units or outputs).

    Args:
        dead_info: dead fraction reported as ``info``.
        dead_warning: dead fraction reported as ``warning``.
        dead_critical: dead fraction reported as ``critical`` (the layer is mostly gone).
        saturation_warning: share of a sigmoid/tanh layer's outputs at a flat end, ``warning``.
        windows: consecutive windows a fraction must hold before it is reported.
    """

    dead_info: float = 0.1
    dead_warning: float = 0.25
    dead_critical: float = 0.75
    saturation_warning: float = 0.5
    windows: int = 2

    def __post_init__(self) -> None:
        check_fraction(self, "dead_info", "dead_warning", "dead_critical", "saturation_warning")
        if not self.dead_info <= self.dead_warning <= self.dead_critical:
            raise ValueError(f"`dead_info` <= `dead_warning` <= `dead_critical` must hold, got "
                             f"{self.dead_info!r}, {self.dead_warning!r}, {self.dead_critical!r}.")
        check_positive_int(self, "windows")


@dataclass
class LayerUnits:
    """One activation site over one window, as host numbers.

    ``dead`` is ``None`` for activations that cannot die (sigmoid, tanh, softplus);
    ``saturation`` is ``None`` for those that cannot saturate.
    """

    layer: str
    activation: str
    units: int
    dead: int | None
    dormant: int
    saturation: float | None
    batches: int
    first_step: int
    last_step: int
    producer: str | None = None
    dead_bias_mean: float | None = None  # mean incoming bias of the dead units, when known
    live_bias_mean: float | None = None
    evidence: dict = field(default_factory=dict)

    @property
    def dead_fraction(self) -> float | None:
        return None if self.dead is None or self.units == 0 else self.dead / self.units

    @property
    def dormant_fraction(self) -> float:
        return self.dormant / self.units if self.units else 0.0


class UnitHealthRule:
    """Dead and saturated units per layer, held over ``thresholds.windows`` windows.

    Example:
        >>> rule = UnitHealthRule(UnitThresholds(windows=1))
        >>> window = LayerUnits("net.1", "ReLU", 64, dead=40, dormant=41, saturation=None,
        ...                     batches=5, first_step=0, last_step=49)
        >>> [(f.kind, f.severity) for f in rule.evaluate([window])]
        [('dead_units', 'warning')]
    """

    def __init__(self, thresholds: UnitThresholds | None = None) -> None:
        self.thresholds = thresholds or UnitThresholds()
        self._dead_streak: dict[str, int] = {}
        self._saturation_streak: dict[str, int] = {}

    def evaluate(self, layers: list[LayerUnits]) -> list[Finding]:
        findings = []
        for layer in layers:
            finding = self._dead(layer)
            if finding is not None:
                findings.append(finding)
            finding = self._saturated(layer)
            if finding is not None:
                findings.append(finding)
        return findings

    def _streak(self, streaks: dict[str, int], layer: str, hit: bool) -> bool:
        streaks[layer] = streaks.get(layer, 0) + 1 if hit else 0
        return streaks[layer] >= self.thresholds.windows

    def _dead(self, layer: LayerUnits) -> Finding | None:
        fraction = layer.dead_fraction
        t = self.thresholds
        if fraction is None or not self._streak(self._dead_streak, layer.layer, fraction >= t.dead_info):
            return None
        severity = "critical" if fraction >= t.dead_critical else "warning" if fraction >= t.dead_warning else "info"
        after = f" (after `{layer.producer}`)" if layer.producer else ""
        seen = (f"{layer.dead} of {layer.units} units ({fraction:.0%}) of the {layer.activation} in "
                f"`{layer.layer}`{after} never gave a positive output over steps {layer.first_step}-"
                f"{layer.last_step} ({layer.batches} sampled batches); the layer has lost that share "
                "of its capacity.")
        causes = None
        if _negative_bias(layer):
            live = "" if layer.live_bias_mean is None else f", against {layer.live_bias_mean:.3g} for the live units"
            seen += f" Their incoming biases average {layer.dead_bias_mean:.3g}{live}."
            causes = ("large negative biases on these units (often pushed there by a learning rate that "
                      "is too high), or poor initialisation")
        evidence = {"dead_fraction": fraction, "dead_units": layer.dead, "units": layer.units,
                    "dormant_fraction": layer.dormant_fraction, "first_step": layer.first_step,
                    "last_step": layer.last_step, "batches": layer.batches, **layer.evidence}
        if layer.dead_bias_mean is not None:
            evidence["dead_bias_mean"] = layer.dead_bias_mean
        return Finding("dead_units", severity, advise("dead_units", seen, causes), layer=layer.layer,
                       evidence=evidence)

    def _saturated(self, layer: LayerUnits) -> Finding | None:
        saturation = layer.saturation
        t = self.thresholds
        hit = saturation is not None and saturation >= t.saturation_warning
        if saturation is None or not self._streak(self._saturation_streak, layer.layer, hit):
            return None
        seen = (f"{saturation:.0%} of the outputs of the {layer.activation} in `{layer.layer}` sat at its "
                f"flat ends over steps {layer.first_step}-{layer.last_step}, where its gradient is "
                "nearly zero: those units barely learn.")
        evidence = {"saturation": saturation, "units": layer.units, "dormant_fraction": layer.dormant_fraction,
                    "first_step": layer.first_step, "last_step": layer.last_step, **layer.evidence}
        return Finding("saturated_units", "warning", advise("saturated_units", seen), layer=layer.layer,
                       evidence=evidence)

    def state_dict(self) -> dict:
        return {"dead_streak": dict(self._dead_streak), "saturation_streak": dict(self._saturation_streak)}

    def load_state_dict(self, state: dict) -> None:
        self._dead_streak = {str(k): int(v) for k, v in state.get("dead_streak", {}).items()}
        self._saturation_streak = {str(k): int(v) for k, v in state.get("saturation_streak", {}).items()}


def _negative_bias(layer: LayerUnits) -> bool:
    """The dead units' biases are clearly negative: below -0.1 and well below the live ones'
    (a healthy layer's dead units often have biases a little below zero; that says nothing)."""
    dead, live = layer.dead_bias_mean, layer.live_bias_mean
    if dead is None or not math.isfinite(dead) or dead >= -0.1:
        return False
    return live is None or not math.isfinite(live) or dead < live - 2 * abs(live)
