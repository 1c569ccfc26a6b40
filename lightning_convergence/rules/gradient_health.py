"""Host-side gradient health rules, evaluated once per logging window.

Fed a :class:`~lightning_convergence.rules.gradient_window.WindowSummary` (plain floats), they
return :class:`~lightning_convergence.recorder.records.Finding` objects. Trainer-free: the tests
drive them with tables of numbers.

References:
    Zhang et al., "AUTOTRAINER: An Automatic DNN Training Problem Detection and Repair System",
    ICSE 2021: vanishing gradients when the first/last layer gradient-norm ratio is below 1e-3
    and the first layer's norm below 1e-4. We require it on ``patience`` consecutive windows of
    window-mean norms to avoid alarms on single noisy steps.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from lightning_convergence.rules.findings import Cause, Finding
from lightning_convergence.rules.gradient_window import WindowSummary
from lightning_convergence.validation import check_fields, check_open_fraction, check_positive_float, check_positive_int


@dataclass(frozen=True)
class GradientThresholds:
    """Thresholds of :class:`GradientHealthRule`; defaults follow the module references.

    Args:
        vanishing_ratio: first/last layer norm ratio below which gradients vanish.
        vanishing_first: the first layer's norm must also be below this.
        vanishing_patience: consecutive windows the vanishing condition must hold.
        layer_growth: a layer's window-mean norm this many times its own recent median is an
            explosion in that layer.
        layer_baseline_windows: windows of history a layer needs before ``layer_growth`` applies.
        amp_persistent_fraction: under fp16, a window where more than this fraction of steps
            overflowed is persistent overflow (escalated to a warning).
        amp_min_scale: a loss scale below this is a collapsing scale (critical).
        spike_warning_steps: spikes in one window that make ``exploding_gradients`` a warning
            (fewer: info), unless one spike reaches ``spike_warning_ratio`` x the median.
        spike_warning_ratio: a single spike this many times the median is a warning.
    """

    vanishing_ratio: float = 1e-3
    vanishing_first: float = 1e-4
    vanishing_patience: int = 2
    layer_growth: float = 10.0
    layer_baseline_windows: int = 3
    amp_persistent_fraction: float = 0.5
    amp_min_scale: float = 1.0
    spike_warning_steps: int = 2
    spike_warning_ratio: float = 50.0

    def __post_init__(self) -> None:
        check_fields(self, check_open_fraction, "vanishing_ratio", "vanishing_first", "amp_persistent_fraction")
        check_fields(self, check_positive_float, "amp_min_scale")
        check_fields(self, check_positive_int, "vanishing_patience", "layer_baseline_windows", "spike_warning_steps")
        for name in ("layer_growth", "spike_warning_ratio"):
            check_positive_float(name, getattr(self, name), minimum=1.0)


class GradientHealthRule:
    """Turns window summaries into findings; keeps a little state across windows.

    Args:
        layer_names: the layer groups, in forward order.
        thresholds: the rule's thresholds.

    Example:
        >>> from lightning_convergence.rules.gradient_window import _empty_summary
        >>> rule = GradientHealthRule(["fc1", "fc2"])
        >>> summary = _empty_summary(2)
        >>> summary.steps, summary.nonfinite_grad_steps, summary.first_nonfinite_grad_step = 5, 1, 3
        >>> [f.kind for f in rule.evaluate(summary)]
        ['nonfinite_gradients']
    """

    def __init__(self, layer_names: list[str], thresholds: GradientThresholds | None = None) -> None:
        self.layer_names = list(layer_names)
        self.thresholds = thresholds or GradientThresholds()
        self._vanishing_streak = 0
        self._layer_history: list[list[float]] = [[] for _ in self.layer_names]
        self._previous_loss = math.nan  # the last window's mean training loss

    def evaluate(
        self,
        summary: WindowSummary,
        amp_scaler: bool = False,
        amp_scale: float | None = None,
        first_nonfinite_layer: str | None = None,
        last_nonfinite_layer: str | None = None,
    ) -> list[Finding]:
        """All findings for one window (empty when healthy). ``first_nonfinite_layer`` and
        ``last_nonfinite_layer``: the first and the last layer, in forward order, whose gradients
        held NaN/Inf (the last is the first in backward order: where the NaN entered the
        backward pass)."""
        if summary.steps == 0 and summary.loss_steps == 0:
            return []
        findings: list[Finding] = []
        findings += self._nonfinite_loss(summary)
        findings += self._nonfinite(summary, amp_scaler, amp_scale, first_nonfinite_layer, last_nonfinite_layer)
        findings += self._spike(summary)
        findings += self._layer_growth(summary)
        findings += self._vanishing(summary)
        # In the order they happened (a NaN gradient from a finite loss comes before the NaN loss it
        # causes at the next step): the first non-finite one is the event the others are part of.
        return sorted(findings, key=lambda f: math.inf if f.step is None else f.step)

    def _nonfinite_loss(self, s: WindowSummary) -> list[Finding]:
        if s.nonfinite_loss_steps == 0:
            return []
        seen = (
            f"The training loss was NaN/Inf on {s.nonfinite_loss_steps} of {s.loss_steps} batches, "
            f"first at step {s.first_nonfinite_loss_step}."
        )
        return [Finding("nonfinite_loss", "critical", seen,
                        evidence={"nonfinite_batches": s.nonfinite_loss_steps, "batches": s.loss_steps},
                        step=s.first_nonfinite_loss_step)]

    def _nonfinite(self, s: WindowSummary, amp_scaler: bool, amp_scale: float | None,
                   layer: str | None, entry: str | None = None) -> list[Finding]:
        if s.nonfinite_grad_steps == 0:
            return []
        t = self.thresholds
        evidence = {"nonfinite_steps": s.nonfinite_grad_steps, "steps": s.steps}
        where = f" (first layer in forward order: {layer})" if layer else ""
        if entry and entry != layer:  # the NaN entered the backward pass there, and flowed on
            where = (f" (first layer in backward order, where the NaN entered the backward pass: {entry}; "
                     f"in forward order: {layer})")
            evidence["first_layer_backward"] = entry
        if amp_scaler:
            fraction = s.nonfinite_grad_steps / max(s.steps, 1)
            if amp_scale is not None:
                evidence["loss_scale"] = amp_scale
            if amp_scale is not None and amp_scale < t.amp_min_scale:
                severity, state = "critical", f"the loss scale has collapsed to {amp_scale:.3g}"
            elif fraction > t.amp_persistent_fraction:
                severity, state = "warning", f"overflow persists ({fraction:.0%} of steps)"
            else:
                severity, state = "info", "the scaler skipped those steps and lowered its scale"
            seen = (f"The fp16 loss scaler saw Inf/NaN gradients on {s.nonfinite_grad_steps} of "
                    f"{s.steps} steps, first at step {s.first_nonfinite_grad_step}{where}; {state}.")
            return [Finding("amp_overflow", severity, seen, layer=layer,
                            evidence=evidence, step=s.first_nonfinite_grad_step)]
        seen = (f"Gradients were NaN/Inf on {s.nonfinite_grad_steps} of {s.steps} optimizer steps, "
                f"first at step {s.first_nonfinite_grad_step}{where}.")
        return [Finding("nonfinite_gradients", "critical", seen,
                        layer=layer, evidence=evidence, step=s.first_nonfinite_grad_step)]

    def _spike(self, s: WindowSummary) -> list[Finding]:
        if s.spike_steps == 0:
            return []
        seen = (f"The total gradient norm jumped to {s.max_spike_ratio:.1f}x its recent median "
                f"({s.spike_median:.3g}) on {s.spike_steps} of {s.steps} steps, first at step "
                f"{s.first_spike_step}; the largest norm was {s.max_total_norm:.3g}.")
        # One moderate spike in a window is common in runs that converge fine (measured: single
        # 12-13x spikes in healthy digits CNNs at lr 0.05-0.1): a note, not a warning. Repeated
        # spikes, or one far outside the run's scale, are a warning; most steps spiking, critical.
        t = self.thresholds
        if s.spike_steps > s.steps / 2:
            severity = "critical"
        elif s.spike_steps >= t.spike_warning_steps or s.max_spike_ratio >= t.spike_warning_ratio:
            severity = "warning"
        else:
            severity = "info"
        evidence = {"max_total_norm": s.max_total_norm, "median_norm": s.spike_median,
                    "ratio": s.max_spike_ratio, "spike_steps": s.spike_steps}
        return [Finding("exploding_gradients", severity, seen,
                        evidence=evidence, step=s.first_spike_step)]

    def _layer_growth(self, s: WindowSummary) -> list[Finding]:
        t = self.thresholds
        previous_loss, self._previous_loss = self._previous_loss, s.mean_loss
        worst: tuple[float, int, float] | None = None
        for i, mean in enumerate(s.layer_mean_norms):
            history = self._layer_history[i]
            if math.isfinite(mean) and len(history) >= t.layer_baseline_windows:
                baseline = statistics.median(history)
                if baseline > 0 and mean / baseline > t.layer_growth:
                    if worst is None or mean / baseline > worst[0]:
                        worst = (mean / baseline, i, baseline)
            if math.isfinite(mean):
                history.append(mean)
                del history[: -2 * t.layer_baseline_windows]
        if worst is None:
            return []
        ratio, i, baseline = worst
        name = self.layer_names[i]
        seen = (f"The gradient norm of {name} averaged {s.layer_mean_norms[i]:.3g} over the last "
                f"{s.steps} steps, {ratio:.1f}x its own recent level ({baseline:.3g}).")
        evidence = {"layer_norm": s.layer_mean_norms[i], "baseline_norm": baseline, "ratio": ratio}
        before, now = previous_loss, s.mean_loss
        if math.isfinite(before) and math.isfinite(now) and now < before:
            # Gradients that grow while the loss falls are usually a network leaving its flat
            # start (measured: healthy CNNs at lr 0.05 did this early in epoch 1), not a blow-up.
            seen += (f" The training loss kept falling meanwhile ({before:.3g} -> {now:.3g}), so this is more "
                     "likely training picking up speed than an explosion; it becomes a warning if the loss rises.")
            evidence.update(loss_before=before, loss_now=now)
            return [Finding("exploding_gradients", "info", seen, layer=name,
                            evidence=evidence)]
        return [Finding("exploding_gradients", "warning", seen, layer=name,
                        evidence=evidence)]

    def _vanishing(self, s: WindowSummary) -> list[Finding]:
        t = self.thresholds
        present = [(n, v) for n, v in zip(self.layer_names, s.layer_mean_norms) if math.isfinite(v)]
        if len(present) < 2 or present[-1][1] <= 0:
            self._vanishing_streak = 0
            return []
        (first_name, first), (last_name, last) = present[0], present[-1]
        ratio = first / last
        if ratio < t.vanishing_ratio and first < t.vanishing_first:
            self._vanishing_streak += 1
        else:
            self._vanishing_streak = 0
        if self._vanishing_streak != t.vanishing_patience:
            return []  # report once when the streak reaches patience, not on every window after
        causes: tuple[Cause, ...] = ()  # the kind's usual causes and remedies
        remedies: tuple[str, ...] = ()
        evidence = {"first_norm": first, "last_norm": last, "ratio": ratio}
        if first == 0:
            seen = (f"No gradient reaches the first layer ({first_name}): its gradient norm has been "
                    f"exactly 0 for {self._vanishing_streak} logging windows while the last layer "
                    f"({last_name}) gets {last:.2e}.")
            # Exactly zero is not a slow decay: either ReLUs after it died (often from a learning
            # rate that is too high early on) or the layer is cut off from the loss.
            zero = {"first_norm": first, "last_norm": last}
            causes = (Cause("dead_relu_units", 0.4, zero), Cause("gradient_flow_cut", 0.35, zero),
                      Cause("learning_rate_too_high", 0.25, zero))
            remedies = ("look for dead units after this layer (DeadNeuronTracker) and re-initialise them, or use "
                        "LeakyReLU/GELU", "check that no detach, no_grad or requires_grad=False cuts this layer off "
                        "from the loss", "lower the learning rate")
        else:
            seen = (f"The first layer ({first_name}) gets gradients of norm {first:.2e}, {ratio:.1e} "
                    f"times those of the last layer ({last_name}, {last:.2e}), for "
                    f"{self._vanishing_streak} logging windows in a row.")
        return [Finding("vanishing_gradients", "warning", seen, layer=first_name, evidence=evidence, causes=causes,
                        remedies=remedies)]

    def state_dict(self) -> dict:
        return {"vanishing_streak": self._vanishing_streak,
                "layer_history": [list(h) for h in self._layer_history], "previous_loss": self._previous_loss}

    def load_state_dict(self, state: dict) -> None:
        self._vanishing_streak = int(state.get("vanishing_streak", 0))
        self._previous_loss = float(state.get("previous_loss", math.nan))
        history = state.get("layer_history")
        if history is not None and len(history) == len(self.layer_names):
            self._layer_history = [list(map(float, h)) for h in history]


def norm_trend(norms: list[float]) -> dict[str, float | None]:
    """How a window's total gradient norms moved, for the ranking of causes: the share of steps
    whose norm rose over the step before, and the last norm over the first (``None`` for a
    window of fewer than 8 finite norms).

    Example:
        >>> norm_trend([float(n) for n in range(1, 11)])  # gradients that add up, step after step
        {'grad_norm_rising_share': 1.0, 'grad_norm_growth': 10.0}
        >>> norm_trend([1.0, 2.0, 1.5])["grad_norm_growth"] is None
        True
    """
    finite = [n for n in norms if math.isfinite(n)]
    if len(finite) < 8 or finite[0] <= 0:
        return {"grad_norm_rising_share": None, "grad_norm_growth": None}
    rising = sum(b > a for a, b in zip(finite, finite[1:])) / (len(finite) - 1)
    return {"grad_norm_rising_share": rising, "grad_norm_growth": finite[-1] / finite[0]}


def is_rising(trend: dict[str, float | None]) -> bool:
    """Whether a :func:`norm_trend` is a norm that rose steadily: on 90% of the steps, by 1.2x or
    more in the window (gradients that add up because they are never zeroed)."""
    share, growth = trend.get("grad_norm_rising_share"), trend.get("grad_norm_growth")
    return share is not None and growth is not None and share >= 0.9 and growth >= 1.2

