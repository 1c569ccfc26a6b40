"""Which cause explains a symptom: causes ranked from all the evidence the suite holds.

Each symptom (a diagnosis kind) has usual causes with modest prior confidences
(:data:`~lightning_convergence.rules.advice.USUAL_CAUSES`). Evidence names one of them: a
learning rate of exactly 0, update/weight ratios of order 1, regression targets at 1e10, labels
of one class per batch. The callbacks post what they measure on an :class:`Evidence` board
shared by the suite in one fit (plain numbers, keys from :data:`EVIDENCE_KEYS`); when a finding of
warning or worse is recorded, :func:`rank_causes` re-ranks its causes from the board: a cause
whose signature fires gets the confidence of that signature and its numbers as ``evidence``,
the usual causes that no evidence supports come after it at half their prior, and usual causes
the evidence contradicts drop further. :func:`explain` turns a finding into its ranked form,
with the remedies of the top cause first.

The signatures are the ones practitioners use (the project's causes table): an update/weight
ratio far above about 1e-3 in the first steps means a learning rate that is too high, far below
it one that is too low; a ratio of 0 or a learning rate of 0 is a schedule that reached 0.

References:
    Andrej Karpathy, "A Recipe for Training Neural Networks" (2019): the update/weight ratio of
    about 1e-3 as the healthy scale.
    Leslie N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017: the
    learning rate as the first thing to check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lightning_convergence.rules import advice
from lightning_convergence.rules.findings import Cause, Finding, as_causes, default_causes

EVIDENCE_KEYS: dict[str, str] = {
    "learning_rate": "the smallest learning rate of the first optimizer's groups, as applied",
    "update_ratio_median": "the median over layers of ||W_after - W_before|| / ||W_before|| at a logging step",
    "update_ratio_max": "the largest update/weight ratio over layers at that step",
    "update_ratio_step": "the optimizer step those ratios were measured at",
    "adaptive_optimizer": "whether the first optimizer scales each update by its own gradient history (Adam, "
                          "AdamW, RMSprop, Adagrad, ...): its first steps move every weight by about the LR",
    "update_ratio_peak": "the highest median update/weight ratio measured so far (the first steps included)",
    "update_ratio_peak_step": "the optimizer step of that highest median",
    "nonfinite_gradients_with_finite_loss": "the first optimizer step whose gradients held NaN/Inf while its loss "
                                            "was finite",
    "nonfinite_inputs": "NaN/Inf values seen in the training batches",
    "grad_norm_rising_share": "the share of steps whose total gradient norm rose over the step before, in the "
                              "last window where it rose steadily (a norm that only ever rises)",
    "grad_norm_growth": "the total gradient norm at the end of that window over the one at its start",
    "loss_ema": "the training loss smoothed per step (PlateauAdvisor's) at the end of its last window",
    "input_scale": "the largest per-channel RMS of a floating input, or the largest |value| of an integer input",
    "target_scale": "the RMS of a floating (regression) target",
    "batch_label_share": "the span of labels in one sampled batch (mean over batches, largest - smallest + 1) "
                         "over the span of all the labels seen",
    "label_span": "the span of the labels the sampled batches held (largest - smallest + 1)",
    "zeroes_gradients": "whether the loop clears the gradients before each backward by itself (Lightning's "
                        "automatic optimisation with its own optimizer_zero_grad)",
}
"""The evidence a signature may read, by key, with what each number is."""

# The healthy scale of an update/weight ratio per step is about 1e-3 (Karpathy). Calibrated on the
# tuning half of the sweep (``python -m benchmarks.sweep``): runs that converged had a median
# ratio of 2.6e-3 or more after their first 32 steps, and at most 0.18 in their first steps
# (Adam's first step moves every weight by about the LR: 0.15-0.17 at the best Adam rate); runs
# whose LR was too high mostly peaked above 0.3, or collapsed: a ratio that fell 100x below its
# peak (the units died, nothing moves any more).
UPDATE_RATIO_HIGH = 0.3  # adaptive optimizers (and when the optimizer is not known)
UPDATE_RATIO_HIGH_SGD = 0.1  # SGD: runs that converged peaked at 0.067 (one at the edge of diverging: 0.18)
UPDATE_RATIO_LOW = 2e-3
COLLAPSE = 100.0  # a latest ratio this many times below an early peak above HIGH / 10 is a collapse
INPUT_SCALE_HIGH = 20.0
TARGET_SCALE_HIGH = 1e3
TARGET_SCALE_LOW = 1e-3
# A shuffled batch holds most of the classes: of 10 classes, a batch of 32 spans about all 10, a
# batch of 4 about 6.4 (share 0.64); data sorted by class gives batches of one or two (0.1 to 0.2).
BATCH_LABEL_SHARE_LOW = 0.5

_LOSS_SYMPTOMS = frozenset({"plateau", "no_learning", "divergence", "oscillation", "nonfinite_loss"})
_GRADIENT_SYMPTOMS = frozenset({"exploding_gradients", "vanishing_gradients", "nonfinite_gradients", "dead_units"})


class Evidence:
    """The numbers the suite's callbacks hold about one fit, by key (the latest value of each).

    Example:
        >>> board = Evidence()
        >>> board.post(learning_rate=0.0, update_ratio_median=0.0)
        >>> board.snapshot()["learning_rate"]
        0.0
        >>> "nonsense" in EVIDENCE_KEYS
        False
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def post(self, **values: Any) -> None:
        """Set each key to its latest value (``None`` removes it).

        Raises:
            KeyError: a key that is not in :data:`EVIDENCE_KEYS`.
        """
        for key, value in values.items():
            if key not in EVIDENCE_KEYS:
                raise KeyError(f"unknown evidence key {key!r}; known: {sorted(EVIDENCE_KEYS)}.")
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = value

    def snapshot(self, **live: Any) -> dict[str, Any]:
        """A copy of the board, with ``live`` values (read at this moment) on top."""
        return {**self._values, **{k: v for k, v in live.items() if v is not None}}


@dataclass(frozen=True)
class Signature:
    """The evidence that names one cause: ``test(evidence)`` returns ``(confidence, numbers,
    sentence)`` when it fires, else ``None``; ``explains`` are the kinds it can explain;
    ``contradicted(evidence)`` says when the evidence speaks against the cause; ``yields_to``
    are causes that, when they fire too, explain this one's evidence (gradients never zeroed
    make the updates large: the update ratios then do not mean the learning rate is too high; NaN in
    the data makes every later number NaN, whatever the learning rate; a target or input of scale
    1e4 makes the gradients, and so the updates, that much larger)."""

    cause: str
    explains: frozenset[str]
    test: Callable[[Mapping[str, Any]], tuple[float, dict[str, Any], str] | None]
    contradicted: Callable[[Mapping[str, Any]], bool] = lambda evidence: False
    yields_to: tuple[str, ...] = ()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _lr_zero(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    lr = e.get("learning_rate")
    if _finite(lr) and lr == 0:
        return 0.95, {"learning_rate": lr}, ("the learning rate is exactly 0: a schedule reached 0 (one sized in "
                                            "epochs but stepped every batch?), so the weights cannot move")
    ratio = e.get("update_ratio_median")
    if _finite(ratio) and ratio == 0 and _finite(e.get("update_ratio_max")) and e["update_ratio_max"] == 0:
        return 0.9, {"update_ratio_max": 0.0}, "no weight moved at all at the last measurement (update/weight ratio 0)"
    return None


def _lr_low(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    ratio = e.get("update_ratio_median")
    if _finite(ratio) and 0 < ratio < UPDATE_RATIO_LOW:
        return 0.7, {"update_ratio_median": ratio}, (f"the weights move by {ratio:.1e} of their norm per step "
                                                     f"(runs that converge: {UPDATE_RATIO_LOW:.0e} or more)")
    return None


def is_adaptive(optimizer: Any) -> bool:
    """Whether ``optimizer`` scales each update by its own gradient history (its first steps
    move every weight by about the learning rate, whatever the gradient's size).

    Example:
        >>> import torch
        >>> p = [torch.nn.Parameter(torch.zeros(1))]
        >>> is_adaptive(torch.optim.AdamW(p)), is_adaptive(torch.optim.SGD(p, lr=0.1))
        (True, False)
    """
    adaptive = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adamax,
                torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adadelta)
    return isinstance(optimizer, adaptive)


def _lr_high(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    # The highest median ratio measured, the first steps included: a run ruined by its first
    # updates may show small ratios later (its gradients vanished).
    candidates = [(e.get("update_ratio_median"), e.get("update_ratio_step")),
                  (e.get("update_ratio_peak"), e.get("update_ratio_peak_step"))]
    ratio, step = max(((r, s) for r, s in candidates if _finite(r)), default=(None, None), key=lambda c: c[0])
    if ratio is None:
        return None
    at = f" at step {step}" if isinstance(step, int) else ""
    high = UPDATE_RATIO_HIGH_SGD if e.get("adaptive_optimizer") is False else UPDATE_RATIO_HIGH
    if ratio > high:
        # 0.6 just above the bound, 0.9 ten times above it (each step rewrites the weights).
        confidence = min(0.9, 0.6 + 0.3 * math.log10(ratio / high))
        return confidence, {"update_ratio_median": ratio, "step": step}, (
            f"a step moved the weights by {ratio:.2g} of their norm{at} (median over layers; healthy: about 1e-3)")
    latest = e.get("update_ratio_median")
    if ratio > UPDATE_RATIO_HIGH / 10 and _finite(latest) and latest * COLLAPSE < ratio:
        return 0.7, {"update_ratio_median": ratio, "step": step, "update_ratio_latest": latest}, (
            f"a step moved the weights by {ratio:.2g} of their norm{at}, and now they move by {latest:.2g}: large "
            f"updates first, then a collapse (units that died pass no gradient)")
    return None


def _lr_high_contradicted(e: Mapping[str, Any]) -> bool:
    ratio = e.get("update_ratio_max")
    return (_finite(ratio) and ratio < 1e-3) or (_finite(e.get("learning_rate")) and e["learning_rate"] == 0)


def _non_differentiable(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    step = e.get("nonfinite_gradients_with_finite_loss")
    if _finite(step) and step >= 0:
        return 0.85, {"step": step}, (f"the gradients held NaN/Inf at step {int(step)} while the loss was finite: "
                                      f"the backward pass of some operation is not finite at its input")
    return None


def _nonfinite_data(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    count = e.get("nonfinite_inputs")
    if _finite(count) and count > 0:
        return 0.9, {"nonfinite_inputs": count}, f"the training batches held {int(count)} NaN/Inf values"
    return None


def _unnormalized_inputs(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    scale = e.get("input_scale")
    if _finite(scale) and scale > INPUT_SCALE_HIGH:
        return 0.6, {"input_scale": scale}, f"an input has values of scale {scale:.3g} (standardised: about 1)"
    return None


def _unnormalized_targets(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    scale = e.get("target_scale")
    if _finite(scale) and scale > 0 and not TARGET_SCALE_LOW <= scale <= TARGET_SCALE_HIGH:
        return 0.9, {"target_scale": scale}, (f"the regression target has a scale of {scale:.3g}: the loss is of "
                                              f"that order squared, and no learning rate fits it")
    return None


def _unshuffled(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    share, span = e.get("batch_label_share"), e.get("label_span")
    if _finite(share) and share <= BATCH_LABEL_SHARE_LOW and _finite(span) and span >= 3:
        return 0.85, {"batch_label_share": share, "label_span": span}, (
            f"a batch holds labels spanning {share:.0%} of the {int(span)} label values seen: the training data "
            f"is sorted, not shuffled")
    return None


# Gradients never zeroed add up step after step: the total norm rises on (nearly) every step. A
# healthy run's norm goes up and down from one step to the next.
RISING_SHARE = 0.9
RISING_GROWTH = 1.2


def _stale(e: Mapping[str, Any]) -> tuple[float, dict, str] | None:
    share, growth = e.get("grad_norm_rising_share"), e.get("grad_norm_growth")
    if e.get("zeroes_gradients") is True:
        return None  # the loop clears them: a norm that keeps rising is an explosion, not a sum
    if _finite(share) and share >= RISING_SHARE and _finite(growth) and growth >= RISING_GROWTH:
        # 0.8 for a 1.2x rise, 0.95 for 10x and more in one window: the large updates and the
        # dying units that follow are its consequences, so it outranks what they suggest.
        confidence = min(0.95, 0.8 + 0.15 * math.log10(growth / RISING_GROWTH) / math.log10(10 / RISING_GROWTH))
        return confidence, {"grad_norm_rising_share": share, "grad_norm_growth": growth}, (
            f"the gradient norm rose on {share:.0%} of the steps of a window, {growth:.3g}x in all: gradients that "
            f"add up because they are never zeroed (manual optimisation without optimizer.zero_grad())")
    return None


SIGNATURES: tuple[Signature, ...] = (
    # A learning rate of 0 explains vanishing updates too; small ratios alone do not (vanishing
    # gradients make them small), and they follow from a collapse after updates far too large.
    Signature("learning_rate_too_low", _LOSS_SYMPTOMS | {"vanishing_gradients"}, _lr_zero),
    Signature("learning_rate_too_low", _LOSS_SYMPTOMS, _lr_low, yields_to=("learning_rate_too_high",)),
    Signature("learning_rate_too_high", _LOSS_SYMPTOMS | _GRADIENT_SYMPTOMS, _lr_high, _lr_high_contradicted,
              yields_to=("stale_gradients", "nonfinite_data", "unnormalized_targets", "unnormalized_inputs")),
    Signature("non_differentiable_operation", frozenset({"nonfinite_gradients", "nonfinite_loss", "divergence"}),
              _non_differentiable),
    Signature("nonfinite_data", frozenset({"nonfinite_loss", "nonfinite_gradients", "divergence"}), _nonfinite_data),
    Signature("unnormalized_targets", _LOSS_SYMPTOMS | {"exploding_gradients"}, _unnormalized_targets),
    Signature("unnormalized_inputs", _LOSS_SYMPTOMS | {"exploding_gradients", "saturated_units", "dead_units"},
              _unnormalized_inputs),
    Signature("unshuffled_data", _LOSS_SYMPTOMS, _unshuffled),
    Signature("stale_gradients", _LOSS_SYMPTOMS | _GRADIENT_SYMPTOMS, _stale),
)
"""Every cause the evidence can name, with the kinds it can explain."""

UNSUPPORTED_WEIGHT = 0.5  # a usual cause no evidence supports, once another cause is supported
CONTRADICTED_WEIGHT = 0.1  # a usual cause the evidence speaks against


def rank_causes(kind: str, evidence: Mapping[str, Any]) -> tuple[tuple[Cause, ...], dict[str, str]]:
    """The causes of ``kind``, most likely first, and per cause named by evidence, the sentence
    that says why.

    Example:
        >>> causes, why = rank_causes("no_learning", {"learning_rate": 0.0})
        >>> causes[0].cause, causes[0].evidence
        ('learning_rate_too_low', {'learning_rate': 0.0})
        >>> [c.cause for c in rank_causes("no_learning", {})[0]][:2]
        ['labels_mismatched', 'wrong_loss_for_task']
    """
    supported: dict[str, Cause] = {}
    why: dict[str, str] = {}
    against: set[str] = set()
    for signature in SIGNATURES:
        if kind not in signature.explains:
            continue
        if signature.contradicted(evidence):
            against.add(signature.cause)
        fired = signature.test(evidence)
        if fired is None:
            continue
        confidence, numbers, sentence = fired
        if signature.cause not in supported or supported[signature.cause].confidence < confidence:
            supported[signature.cause] = Cause(signature.cause, confidence, numbers)
            why[signature.cause] = sentence
    for signature in SIGNATURES:  # a cause whose evidence another supported cause explains
        named = supported.get(signature.cause)
        if named is not None and any(other in supported for other in signature.yields_to):
            supported[signature.cause] = Cause(named.cause, named.confidence * UNSUPPORTED_WEIGHT, named.evidence)
    ranked = list(supported.values())
    for prior in default_causes(kind):
        if prior.cause in supported:
            continue
        weight = CONTRADICTED_WEIGHT if prior.cause in against else UNSUPPORTED_WEIGHT if supported else 1.0
        ranked.append(Cause(prior.cause, prior.confidence * weight))
    return as_causes(ranked), why


def explain(finding: Finding, evidence: Mapping[str, Any]) -> Finding:
    """``finding`` with its causes ranked from ``evidence`` and the remedies of its top cause
    first. Info findings, and findings whose rule gave causes with evidence of its own that no
    signature outranks, are returned unchanged.

    Example:
        >>> f = Finding("no_learning", "warning", "The loss has not moved from 2.30 in 200 steps.")
        >>> ranked = explain(f, {"learning_rate": 0.0})
        >>> ranked.causes[0].cause, ranked.remedies[0][:40]
        ('learning_rate_too_low', 'check the learning-rate scheduler: it re')
    """
    if finding.severity == "info":
        return finding
    ranked, why = rank_causes(finding.kind, evidence)
    own = [c for c in finding.causes if c.evidence]
    if own and (not why or max(c.confidence for c in own) >= ranked[0].confidence):
        return finding  # the rule's own evidence outranks what the board says
    top = ranked[0]
    remedies = list(advice.CAUSE_REMEDIES.get(top.cause, ()) if top.cause in why else ())
    # The kind's own advice follows, less what the cause's remedy already says.
    remedies += [r for r in finding.remedies if not any(c.startswith(r) or r.startswith(c) for c in remedies)]
    observation = finding.observation
    if top.cause in why:
        observation = f"{observation.rstrip()} Evidence: {why[top.cause]}."
    merged = as_causes([*ranked, *[c for c in own if c.cause not in {r.cause for r in ranked}]])
    return dataclasses.replace(finding, observation=observation, causes=merged, remedies=tuple(remedies))
