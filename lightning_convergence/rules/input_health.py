"""Rules on the training batches: NaN/Inf, scale far from normalised, class labels out of range.

Fed host numbers per batch part (one :class:`PartSummary` each), the rule returns findings. The
scale test looks at each channel's root mean square and at its mean against its spread:

- ``unnormalized_inputs`` (inputs only: a part that looks like the target is left alone, since a
  regression target's scale is the task's) when some channel's RMS exceeds ``scale_high`` (raw 0-255 pixels have
  an RMS near 100; standardised data near 1; values in [0, 1] below 1), or when a channel sits
  far from zero relative to its spread (``|mean| > offset_ratio x std`` with ``|mean| > 1``);
- ``nonfinite_inputs`` when any value is NaN/Inf;
- ``invalid_targets`` when class labels fall outside ``[0, num_classes)`` (with ``-100``, the
  usual ``ignore_index``, allowed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lightning_convergence.rules.findings import Cause, Finding
from lightning_convergence.validation import check_fields, check_positive_float

IGNORE_INDEX = -100


@dataclass
class PartSummary:
    """One batch part over a window of sampled batches, as host numbers."""

    path: str
    floating: bool
    batches: int
    means: list[float] = field(default_factory=list)
    rms: list[float] = field(default_factory=list)
    nonfinite: int = 0
    first_nonfinite_step: int = -1
    low: float | None = None
    high: float | None = None
    mean_batch_span: float | None = None  # integer parts: the mean of each batch's largest - smallest
    is_target: bool = False


@dataclass(frozen=True)
class InputThresholds:
    """Thresholds of :class:`InputHealthRule`."""

    scale_high: float = 5.0
    offset_ratio: float = 3.0

    def __post_init__(self) -> None:
        check_fields(self, check_positive_float, "scale_high", "offset_ratio")


class InputHealthRule:
    """Judges batch parts.

    Example:
        >>> rule = InputHealthRule()
        >>> pixels = PartSummary("batch[0]", True, 3, means=[110.0], rms=[130.0])
        >>> [(f.kind, f.severity) for f in rule.evaluate([pixels])]
        [('unnormalized_inputs', 'warning')]
    """

    def __init__(self, thresholds: InputThresholds | None = None, num_classes: int | None = None) -> None:
        self.thresholds = thresholds or InputThresholds()
        self.num_classes = num_classes

    def evaluate(self, parts: list[PartSummary]) -> list[Finding]:
        findings = []
        for part in parts:
            if part.floating and part.nonfinite > 0:
                findings.append(self._nonfinite(part))
            if part.floating and part.rms and not part.is_target:  # a regression target's scale is the task's
                finding = self._scale(part)
                if finding is not None:
                    findings.append(finding)
            elif part.is_target and self.num_classes is not None:
                finding = self._labels(part)
                if finding is not None:
                    findings.append(finding)
        return findings

    def _nonfinite(self, part: PartSummary) -> Finding:
        first = part.first_nonfinite_step
        at = f", first at step {first}" if first >= 0 else ""
        seen = f"`{part.path}` held {part.nonfinite} NaN/Inf values in the training batches{at}."
        return Finding("nonfinite_inputs", "warning", seen, layer=part.path,
                       evidence={"nonfinite_values": part.nonfinite, "first_step": first},
                       step=first if first >= 0 else None)

    def _scale(self, part: PartSummary) -> Finding | None:
        t = self.thresholds
        channels = [(i, m, r) for i, (m, r) in enumerate(zip(part.means, part.rms)) if math.isfinite(r)]
        if not channels:
            return None
        worst_index, worst_mean, worst_rms = max(channels, key=lambda c: c[2])
        offsets = [(i, m, math.sqrt(max(r * r - m * m, 0.0))) for i, m, r in channels]
        offset = max(offsets, key=lambda c: abs(c[1]) / max(c[2], 1e-12))
        off_index, off_mean, off_std = offset
        too_large = worst_rms > t.scale_high
        shifted = abs(off_mean) > 1 and abs(off_mean) > t.offset_ratio * off_std
        if not (too_large or shifted):
            return None
        where = f" (channel {worst_index} of {len(part.rms)})" if len(part.rms) > 1 else ""
        if too_large:
            seen = (f"`{part.path}` is far from normalised: its values have a root mean square of {worst_rms:.4g}"
                    f"{where}, mean {worst_mean:.4g}; normalised inputs sit near 1.")
            if 50 < worst_rms < 300 and worst_mean > 0:
                seen += " That looks like raw 0-255 pixel values."
        else:
            seen = (f"`{part.path}` is offset from zero: channel {off_index} has mean {off_mean:.4g} against a "
                    f"spread of {off_std:.4g}.")
        evidence = {"max_rms": worst_rms, "channel": worst_index, "mean": worst_mean, "channels": len(part.rms),
                    "offset_mean": off_mean, "offset_std": off_std}
        return Finding("unnormalized_inputs", "warning", seen, layer=part.path,
                       evidence=evidence)

    def _labels(self, part: PartSummary) -> Finding | None:
        low, high, k = part.low, part.high, self.num_classes
        if low is None or high is None:
            return None
        bad_low = low < 0 and low != IGNORE_INDEX
        if not (bad_low or high >= k):
            return None
        seen = (f"`{part.path}` holds class labels from {low:g} to {high:g}, outside [0, {k}) for {k} classes "
                "(-100, the usual ignore_index, is allowed). The loss will fail or learn from the wrong targets.")
        evidence = {"problem": "labels_out_of_range", "min": low, "max": high, "num_classes": k}
        # Labels outside 0..K-1 are seen, not guessed: 1-based labels or a wrong class count first,
        # a label column mixed up with another next.
        causes = (Cause("invalid_targets", 0.8, {"min": low, "max": high, "num_classes": k}),
                  Cause("labels_mismatched", 0.2))
        return Finding("invalid_targets", "critical", seen, layer=part.path, evidence=evidence, causes=causes)


@dataclass
class LabelOrder:
    """The integer labels of the sampled batches over the whole run (a window samples too few
    batches to tell sorted data): the span of all labels seen, and each batch's own span.

    Example:
        >>> order = LabelOrder()
        >>> for low in range(0, 10, 2):  # data sorted by class: each batch holds two classes
        ...     order.add(PartSummary("batch[1]", False, 1, low=low, high=low + 1, mean_batch_span=1.0))
        >>> order.span, order.batch_share
        (10.0, 0.2)
    """

    low: float = math.inf
    high: float = -math.inf
    span_sum: float = 0.0
    batches: int = 0

    def add(self, part: PartSummary) -> None:
        if part.low is None or part.high is None or part.mean_batch_span is None or not part.batches:
            return
        self.low, self.high = min(self.low, part.low), max(self.high, part.high)
        self.span_sum += part.mean_batch_span * part.batches
        self.batches += part.batches

    @property
    def span(self) -> float | None:
        """Largest - smallest + 1 of every label seen."""
        return float(self.high - self.low + 1) if self.batches else None

    @property
    def batch_share(self) -> float | None:
        """A batch's own span (mean over batches, + 1) over the span of every label seen."""
        return (self.span_sum / self.batches + 1) / self.span if self.batches else None

    def state_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "span_sum": self.span_sum, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.low, self.high = float(state.get("low", math.inf)), float(state.get("high", -math.inf))
        self.span_sum, self.batches = float(state.get("span_sum", 0.0)), int(state.get("batches", 0))


def input_evidence(parts: list[PartSummary], labels: LabelOrder) -> dict[str, float | None]:
    """What a window of batch parts, and the run's labels so far, tell the ranking of causes
    (keys of :data:`lightning_convergence.rules.causes.EVIDENCE_KEYS`; ``None``: not measured).

    Example:
        >>> labels = PartSummary("batch[1]", False, 10, low=0, high=9, mean_batch_span=0.5, is_target=True)
        >>> pixels = PartSummary("batch[0]", True, 10, means=[110.0], rms=[130.0])
        >>> order = LabelOrder()
        >>> order.add(labels)
        >>> input_evidence([pixels, labels], order)["batch_label_share"]
        0.15
    """
    def largest_rms(part: PartSummary) -> float | None:
        finite = [r for r in part.rms if math.isfinite(r)]
        return max(finite) if finite else None

    inputs = [r for p in parts if p.floating and not p.is_target and (r := largest_rms(p)) is not None]
    targets = [r for p in parts if p.floating and p.is_target and (r := largest_rms(p)) is not None]
    return {
        "input_scale": max(inputs, default=None),
        "target_scale": max(targets, default=None),
        "nonfinite_inputs": sum(p.nonfinite for p in parts) or None,
        "batch_label_share": labels.batch_share,
        "label_span": labels.span,
    }

