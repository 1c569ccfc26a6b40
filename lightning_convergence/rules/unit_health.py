"""Rules on unit activity: dead ReLU-family units and saturated sigmoid/tanh units, per layer,
and which dead (or dormant) units to revive.

:meth:`UnitHealthRule.judge` is fed one :class:`SiteWindow` per activation site and window
(per-unit numbers already on the host). A unit counts as dead when it was silent in this window
and the one before (a unit that is merely rarely active is seldom silent in both; a dead one
is), so the rule keeps the last window's dead mask per site. It builds one :class:`LayerUnits`
per site and returns findings (:meth:`UnitHealthRule.evaluate`: a layer is reported when its
dead fraction, or saturation, crosses a threshold in ``windows`` consecutive windows) and the
units to re-initialise, per layer, at most once per cooldown.

References:
    Sokar, Agarwal, Castro, Evci. "The Dormant Neuron Phenomenon in Deep Reinforcement
    Learning", ICML 2023 (ReDo: tau-dormant units, and re-initialising them).
"""

from __future__ import annotations

import math
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Literal

from lightning_convergence.rules.findings import Cause, Finding, default_causes
from lightning_convergence.validation import check_fields, check_fraction, check_positive_int
from lightning_convergence.stats.activations import CAN_DIE, CAN_SATURATE, ActivationKind, dormant_units


@dataclass(frozen=True)
class UnitThresholds:
    """Thresholds of :class:`UnitHealthRule` (fractions of a layer's units or outputs).

    Args:
        dead_info: dead fraction reported as ``info``.
        dead_warning: dead fraction reported as ``warning``.
        dead_critical: dead fraction reported as ``critical`` (the layer is mostly gone).
        saturation_warning: share of a sigmoid/tanh layer's outputs at a flat end, ``warning``.
        windows: consecutive windows a fraction must hold before it is reported.
        dead_at_once: dead fraction reported (and revived, when acting) from one window.
    """

    dead_info: float = 0.1
    dead_warning: float = 0.25
    dead_critical: float = 0.75
    saturation_warning: float = 0.5
    windows: int = 2
    dead_at_once: float = 0.75

    def __post_init__(self) -> None:
        check_fields(self, check_fraction, "dead_info", "dead_warning", "dead_critical", "saturation_warning",
                     "dead_at_once")
        if not self.dead_info <= self.dead_warning <= self.dead_critical:
            raise ValueError(f"`dead_info` <= `dead_warning` <= `dead_critical` must hold, got "
                             f"{self.dead_info!r}, {self.dead_warning!r}, {self.dead_critical!r}.")
        check_fields(self, check_positive_int, "windows")


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
    window_dead: int | None = None  # units silent in this window alone (``dead`` needs two windows)

    @property
    def dead_fraction(self) -> float | None:
        return None if self.dead is None or self.units == 0 else self.dead / self.units

    @property
    def dormant_fraction(self) -> float:
        return self.dormant / self.units if self.units else 0.0

    @property
    def window_dead_fraction(self) -> float | None:
        return None if self.window_dead is None else self.window_dead / self.units if self.units else 0.0


@dataclass
class SiteWindow:
    """One activation site over one window, as per-unit host numbers (summed over ranks).

    ``producer`` names the layer whose outputs the site's units are, when their wiring is known
    (only then can they be revived); ``redo_skipped`` says why they cannot be, when known.
    """

    layer: str
    activation: str
    kind: ActivationKind
    peak: list[float]  # > 0 where the unit gave a positive output; read for kinds in CAN_DIE only
    abs_sum: list[float]  # sum of |output|
    saturated: list[float]  # outputs at a flat end; read for kinds in CAN_SATURATE only
    values: float  # outputs per unit
    batches: int  # sampled batches in the window
    producer: str | None = None
    bias: list[float] | None = None  # the producer's bias, when it has one
    redo_skipped: str | None = None


@dataclass
class UnitVerdict:
    """What :meth:`UnitHealthRule.judge` concluded about one window."""

    layers: list[LayerUnits]
    findings: list[Finding]
    revive: dict[str, list[int]]  # per layer, the units to re-initialise now (already forgotten)
    blocked: dict[str, list[int]]  # per layer, units that qualify but whose wiring is not known
    # Per layer with a known wiring, the units that qualify for a revival in this window, acting
    # or not (``revive`` is these when acting); a revival decided later is counted with
    # :meth:`UnitHealthRule.count_revived`.
    candidates: dict[str, list[int]] = field(default_factory=dict)
    unwired: dict[str, list[int]] = field(default_factory=dict)  # qualifying units without a known wiring


class UnitHealthRule:
    """Dead and saturated units per layer, held over ``thresholds.windows`` windows, and the
    units to revive.

    Args:
        thresholds: fractions that make a finding.
        dormant_tau: ReDo's threshold on normalised mean |activation|.
        redo_on: revive the ``"dead"`` units of reported layers, or the ``"dormant"`` units of
            any layer that has some, as in the paper.
        redo_cooldown_steps: optimizer steps before the same layer may be revived again.

    Example:
        >>> rule = UnitHealthRule(UnitThresholds(windows=1))
        >>> window = LayerUnits("net.1", "ReLU", 64, dead=40, dormant=41, saturation=None,
        ...                     batches=5, first_step=0, last_step=49)
        >>> [(f.kind, f.severity) for f in rule.evaluate([window])]
        [('dead_units', 'warning')]
        >>> rule = UnitHealthRule()  # reports what held for two windows
        >>> site = SiteWindow("net.1", "ReLU", "nonnegative", peak=[0.0, 3.0], abs_sum=[0.0, 3.0],
        ...                   saturated=[0.0, 0.0], values=8, batches=4, producer="net.0")
        >>> rule.judge([site], last_step=9, act=True).revive
        {}
        >>> rule.judge([site], last_step=19, act=True).revive
        {'net.1': [0]}
    """

    def __init__(self, thresholds: UnitThresholds | None = None, dormant_tau: float = 0.1,
                 redo_on: Literal["dead", "dormant"] = "dead", redo_cooldown_steps: int = 200) -> None:
        self.thresholds = thresholds or UnitThresholds()
        self.dormant_tau = dormant_tau
        self.redo_on = redo_on
        self.redo_cooldown_steps = redo_cooldown_steps
        self._dead_streak: dict[str, int] = {}
        self._saturation_streak: dict[str, int] = {}
        self._previous_dead: dict[str, list[bool]] = {}  # per site, the dead units of the last window
        self._previous_batches: dict[str, int] = {}  # and how many sampled batches that window held
        self._window_start = 0  # first optimizer step of the current window
        self._previous_start = 0  # and of the one before
        self._last_revival: dict[str, int] = {}  # per layer, the step of its last revival

    @property
    def previous_dead(self) -> dict[str, list[bool]]:
        """Per site, the units silent in the last window judged (revived ones excluded)."""
        return {k: list(v) for k, v in self._previous_dead.items()}

    @property
    def last_revival(self) -> dict[str, int]:
        """Per layer, the step of its last revival."""
        return dict(self._last_revival)

    def judge(self, sites: list[SiteWindow], last_step: int, act: bool = False,
              harm_seen: Container[str] | None = None) -> UnitVerdict:
        """Judge one window that ended at ``last_step``; with ``act``, pick the units to revive
        (and count them revived: their cooldown starts, and they are no longer dead before).
        ``harm_seen``: when given, a layer dead below ``dead_at_once`` is revived only if it is
        named there (its dead units were shown to hurt the loss); a layer dead at or above it has
        lost the most of its function and is revived at once."""
        judged = [self._layer(site, last_step) for site in sites]
        layers = [layer for layer, _, _ in judged]
        findings = self.evaluate(layers)
        # A few dead units (info) are normal in a healthy ReLU layer: leave them be.
        reported = {f.layer for f in findings if f.kind == "dead_units" and f.severity != "info"}
        revive: dict[str, list[int]] = {}
        blocked: dict[str, list[int]] = {}
        candidates: dict[str, list[int]] = {}
        unwired: dict[str, list[int]] = {}
        for site, (layer, dead, dormant) in zip(sites, judged):
            if not (layer.layer in reported or (self.redo_on == "dormant" and layer.dormant)):
                continue
            if (harm_seen is not None and layer.layer not in harm_seen
                    and (layer.dead_fraction or 0.0) < self.thresholds.dead_at_once):
                continue  # no harm seen yet: reported, and left as it is (no cooldown starts)
            units = [i for i, flag in enumerate((dormant if self.redo_on == "dormant" else dead) or []) if flag]
            last = self._last_revival.get(layer.layer)
            if not units or (last is not None and last_step - last < self.redo_cooldown_steps):
                continue
            if site.producer is None:
                unwired[layer.layer] = units
                if act:
                    blocked[layer.layer] = units
                continue
            candidates[layer.layer] = units
            if act:
                revive[layer.layer] = units
                self._revived(layer.layer, units, last_step)
        self._previous_start, self._window_start = self._window_start, last_step + 1
        return UnitVerdict(layers, findings, revive, blocked, candidates, unwired)

    def count_revived(self, layer: str, units: list[int], step: int) -> None:
        """Count ``units`` of ``layer`` revived at ``step``, a revival decided after :meth:`judge`
        (from its ``candidates``): their cooldown starts, and they are no longer dead before."""
        self._revived(layer, units, step)

    def _layer(self, site: SiteWindow, last_step: int) -> tuple[LayerUnits, list[bool] | None, list[bool]]:
        """The site's :class:`LayerUnits`, its dead units (over two windows when the last one is
        known) and its dormant ones; remembers this window's dead units."""
        units = len(site.abs_sum)
        dormant = dormant_units(site.abs_sum, self.dormant_tau)
        raw_dead = [p <= 0 for p in site.peak] if site.kind in CAN_DIE else None  # NaN is not dead
        previous = self._previous_dead.get(site.layer)
        dead, first_step, batches = raw_dead, self._window_start, site.batches
        if raw_dead is not None and previous is not None and len(previous) == len(raw_dead):
            dead, first_step = [a and b for a, b in zip(raw_dead, previous)], self._previous_start
            batches += self._previous_batches.get(site.layer, 0)
        if raw_dead is not None:
            self._previous_dead[site.layer] = raw_dead
            self._previous_batches[site.layer] = site.batches
        saturation = None
        if site.kind in CAN_SATURATE and site.values and units:
            saturation = sum(site.saturated) / (site.values * units)
        layer = LayerUnits(site.layer, site.activation, units, None if dead is None else sum(dead), sum(dormant),
                           saturation, batches, first_step, last_step, producer=site.producer,
                           window_dead=None if raw_dead is None else sum(raw_dead))
        if site.redo_skipped is not None:
            layer.evidence["redo_skipped"] = site.redo_skipped
        _add_bias_means(layer, dead, site.bias)
        return layer, dead, dormant

    def _revived(self, layer: str, units: list[int], step: int) -> None:
        self._last_revival[layer] = step
        previous = self._previous_dead.get(layer)
        if previous is not None:  # revived units start afresh: not dead in the window before
            fresh = set(units)
            self._previous_dead[layer] = [d and i not in fresh for i, d in enumerate(previous)]

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
        held = self._streak(self._dead_streak, layer.layer, fraction is not None and fraction >= t.dead_info)
        # A layer mostly dead in one window makes the network's output nearly constant: said (and
        # revived, when acting) at once, not a window later.
        if fraction is None or not (held or fraction >= t.dead_at_once):
            return None
        severity = "critical" if fraction >= t.dead_critical else "warning" if fraction >= t.dead_warning else "info"
        after = f" (after `{layer.producer}`)" if layer.producer else ""
        seen = (f"{layer.dead} of {layer.units} units ({fraction:.0%}) of the {layer.activation} in "
                f"`{layer.layer}`{after} never gave a positive output over steps {layer.first_step}-"
                f"{layer.last_step} ({layer.batches} sampled batches); the layer has lost that share "
                "of its capacity.")
        causes: tuple[Cause, ...] = ()  # the kind's usual causes
        if _negative_bias(layer):
            live = "" if layer.live_bias_mean is None else f", against {layer.live_bias_mean:.3g} for the live units"
            seen += f" Their incoming biases average {layer.dead_bias_mean:.3g}{live}."
            # Large negative biases: often pushed there by a learning rate that is too high, or
            # set by the initialisation. The usual ranking, with the biases as its evidence.
            bias = {"dead_bias_mean": layer.dead_bias_mean, "live_bias_mean": layer.live_bias_mean}
            causes = tuple(Cause(c.cause, c.confidence, bias if c.cause in _BIAS_CAUSES else {})
                           for c in default_causes("dead_units"))
        evidence = {"dead_fraction": fraction, "dead_units": layer.dead, "units": layer.units,
                    "dormant_fraction": layer.dormant_fraction, "first_step": layer.first_step,
                    "last_step": layer.last_step, "batches": layer.batches, **layer.evidence}
        if layer.dead_bias_mean is not None:
            evidence["dead_bias_mean"] = layer.dead_bias_mean
        return Finding("dead_units", severity, seen, layer=layer.layer, evidence=evidence, causes=causes)

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
        return Finding("saturated_units", "warning", seen, layer=layer.layer, evidence=evidence)

    def state_dict(self) -> dict:
        """Plain Python types only (loads with ``weights_only=True``)."""
        return {"dead_streak": dict(self._dead_streak), "saturation_streak": dict(self._saturation_streak),
                "previous_dead": self.previous_dead, "previous_batches": dict(self._previous_batches),
                "window_start": self._window_start, "previous_start": self._previous_start,
                "last_revival": dict(self._last_revival)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; keys a checkpoint lacks (an older one) start afresh."""
        self._dead_streak = {str(k): int(v) for k, v in state.get("dead_streak", {}).items()}
        self._saturation_streak = {str(k): int(v) for k, v in state.get("saturation_streak", {}).items()}
        self._previous_dead = {str(k): [bool(d) for d in v] for k, v in state.get("previous_dead", {}).items()}
        self._previous_batches = {str(k): int(v) for k, v in state.get("previous_batches", {}).items()}
        self._window_start = int(state.get("window_start", 0))
        self._previous_start = int(state.get("previous_start", 0))
        self._last_revival = {str(k): int(v) for k, v in state.get("last_revival", {}).items()}


def _add_bias_means(layer: LayerUnits, dead: list[bool] | None, bias: list[float] | None) -> None:
    """The mean incoming bias of the dead units, and of the live ones, as evidence of the cause."""
    if dead is None or bias is None or not any(dead) or len(dead) != len(bias):
        return
    dead_b = [b for b, d in zip(bias, dead) if d]
    live_b = [b for b, d in zip(bias, dead) if not d]
    layer.dead_bias_mean = sum(dead_b) / len(dead_b)
    layer.live_bias_mean = sum(live_b) / len(live_b) if live_b else None


_BIAS_CAUSES = ("learning_rate_too_high", "bad_initialization")


def _negative_bias(layer: LayerUnits) -> bool:
    """The dead units' biases are clearly negative: below -0.1 and well below the live ones'
    (a healthy layer's dead units often have biases a little below zero; that says nothing)."""
    dead, live = layer.dead_bias_mean, layer.live_bias_mean
    if dead is None or not math.isfinite(dead) or dead >= -0.1:
        return False
    return live is None or not math.isfinite(live) or dead < live - 2 * abs(live)
