"""The preflight's training verdicts: the single-batch overfit over a ladder of learning rates, a
batch never trained on, and the configured learning rate against a range test's pick.

Fed host numbers (no Lightning here); see :mod:`lightning_convergence.rules.preflight` for the
other checks and the references.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightning_convergence.rules.findings import Cause, Finding
from lightning_convergence.rules.preflight import (HELDOUT_FALL, LR_FACTOR_WARN, OVERFIT_FALL, TARGET_SCALE_HIGH,
                                                   CheckResult, PreflightEvidence, finding)


def softmax_floor(num_classes: int) -> float:
    """The lowest cross-entropy a model can reach when its outputs are probabilities (in [0, 1])
    fed to a loss that applies softmax again: ``ln(1 + (K - 1) / e)``.

    Example:
        >>> round(softmax_floor(10), 3)
        1.461
    """
    return math.log(1.0 + (num_classes - 1) / math.e)


@dataclass(frozen=True)
class OverfitRun:
    """One attempt at overfitting the first batch.

    Attributes:
        multiplier: the learning rate used, as a multiple of the configured one.
        losses: the batch's loss at each step (the first before any update).
    """

    multiplier: float
    losses: tuple[float, ...]

    @property
    def start(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def best(self) -> float:
        finite = [v for v in self.losses if math.isfinite(v)]
        return min(finite) if finite else math.nan

    @property
    def fall(self) -> float:
        """The share of its starting loss the batch lost at best (0 when it never fell)."""
        if not (math.isfinite(self.start) and self.start > 0 and math.isfinite(self.best)):
            return 0.0
        return max(0.0, 1.0 - self.best / self.start)

    @property
    def memorised(self) -> bool:
        return self.fall >= 1.0 - OVERFIT_FALL

    def to_dict(self) -> dict[str, Any]:
        return {"lr_multiplier": self.multiplier, "steps": len(self.losses), "start": self.start, "best": self.best,
                "fall": self.fall, "losses": list(self.losses)}


@dataclass(frozen=True)
class HeldOutRun:
    """A few steps over several batches, and the loss of one batch never trained on.

    Attributes:
        multiplier: the learning rate used, as a multiple of the configured one.
        heldout: the held-out batch's loss before the first step and every few steps after.
    """

    multiplier: float
    heldout: tuple[float, ...]

    @property
    def fall(self) -> float | None:
        """The share of its first loss the held-out batch lost at best (``None``: not measured)."""
        held = [v for v in self.heldout if math.isfinite(v)]
        if len(held) < 2 or len(held) != len(self.heldout) or held[0] <= 0:
            return None
        return max(0.0, 1.0 - min(held) / held[0])


def check_overfit(runs: Sequence[OverfitRun], held: HeldOutRun | None, evidence: PreflightEvidence,
                  complete: bool = True) -> tuple[CheckResult, list[Finding]]:
    """Can the model drive the loss of one batch near zero (to :data:`OVERFIT_FALL` of its start)?

    Args:
        runs: the attempts, the first at the configured learning rate; the others (at lower and
            higher rates) only when the one before did not memorise the batch.
        held: the loss of a batch never trained on, over a few steps on the other batches at the
            rate that memorised one (``None``: not measured, as under manual optimisation).
        evidence: the other checks' evidence, which ranks the cause of a failure.
        complete: whether every rate was tried that had to be (``False``: stopped by the time
            limit first; a batch not memorised then proves nothing).

    A batch memorised only at a lower learning rate names a rate that is too high; only at a
    higher one, when the configured rate barely moved the loss (under half its fall), a rate that
    is too low (unless a part of the model gets no gradient). None memorised: a bug, its cause
    ranked from the other checks. Memorised while the loss of a batch never trained on does not
    fall: labels that do not belong to their inputs.
    """
    if not runs or not runs[0].losses:
        return CheckResult("overfit_one_batch", None, note="no step ran"), []
    first = runs[0]
    done = next((run for run in runs if run.memorised), None)
    numbers: dict[str, Any] = {"runs": [run.to_dict() for run in runs], "start": first.start,
                               "best": first.best, "fall": first.fall,
                               "memorised_at_multiplier": None if done is None else done.multiplier}
    findings: list[Finding] = []
    steps = len(first.losses)
    if done is not None and done is not first:
        rate = {"lr_multiplier": done.multiplier, "configured_fall": round(first.fall, 4),
                "fall_at_multiplier": round(done.fall, 4)}
        rose = not math.isfinite(first.best) or any(not math.isfinite(v) or v > 1.5 * first.start for v in first.losses)
        if done.multiplier < 1:
            seen = (f"At the configured learning rate the model could not overfit one batch in {steps} steps (loss "
                    f"{first.start:.4g} -> at best {first.best:.4g}); at {done.multiplier:g}x that rate it did "
                    f"({done.start:.4g} -> {done.best:.4g}). The configured rate is too high for this model.")
            findings.append(finding("divergence" if rose else "no_learning", "warning", seen, step=0, evidence=rate,
                                    causes=(Cause("learning_rate_too_high", 0.85, rate),)))
        elif (first.fall < 0.5 * (1.0 - OVERFIT_FALL) and not (evidence.no_gradient or evidence.zero_gradient)
              and not evidence.model_causes()):
            seen = (f"At the configured learning rate one batch's loss fell only {first.fall:.0%} in {steps} steps; at "
                    f"{done.multiplier:g}x that rate the model memorised it ({done.start:.4g} -> {done.best:.4g}).")
            findings.append(finding("no_learning", "warning", seen, step=0, evidence=rate,
                                    causes=(Cause("learning_rate_too_low", 0.8, rate),)))
    elif done is None and not complete:
        return CheckResult("overfit_one_batch", None, numbers, note=f"stopped at the time limit after {len(runs)} "
                           "learning rate(s), the batch not memorised yet"), []
    elif done is None:
        seen = (f"The model could not overfit one batch: in {steps} steps on the same batch its loss went from "
                f"{first.start:.4g} to at best {first.best:.4g} ({first.fall:.0%} lower; a healthy setup gets below "
                f"{OVERFIT_FALL:.0%} of the start)" + (f", nor at {', '.join(f'{r.multiplier:g}x' for r in runs[1:])} "
                                                       "the learning rate" if len(runs) > 1 else "")
                + ". That is a bug or a setup that cannot learn, not a tuning problem.")
        causes = _overfit_causes(first, evidence) + _ladder_trend(runs)
        # Measured on the sweep's outcomes: a failed overfit with no evidence of a cause was a false
        # alarm on runs that converged (an SGD transformer memorises slowly): info, unless a cause
        # has evidence of its own.
        evidenced = any(c.evidence for c in causes)
        findings.append(finding("no_learning", "warning" if evidenced else "info", seen, step=0,
                                evidence={"start": first.start, "best": first.best, "fall": first.fall},
                                causes=causes))
    held_fall = None if held is None else held.fall
    numbers["heldout"] = None if held is None else {"lr_multiplier": held.multiplier, "losses": list(held.heldout),
                                                    "fall": held_fall}
    if done is not None and held_fall is not None and held_fall < HELDOUT_FALL:
        seen = (f"The model memorises one batch (loss {done.start:.4g} -> {done.best:.4g}) but, trained on other "
                f"batches, its loss on a batch it never saw did not fall ({held.heldout[0]:.4g} -> at best "
                f"{min(held.heldout):.4g}): it learns nothing that carries from one batch to the next, which is "
                "what labels that do not belong to their inputs give.")
        findings.append(finding("no_learning", "warning", seen, step=0,
                                evidence={"heldout_start": held.heldout[0], "heldout_best": min(held.heldout)},
                                # a degenerate model learns slowly and carries little, whatever its labels
                                causes=(*evidence.model_causes(),
                                        Cause("labels_mismatched", 0.75 if not evidence.model_causes() else 0.3,
                                              {"heldout_fall": round(held_fall, 4), "batch_fall": round(done.fall, 4)}),
                                        Cause("label_noise", 0.2), Cause("too_little_data", 0.1))))
    passed = not any(f.severity != "info" for f in findings)
    note = "" if passed else findings[0].causes[0].cause
    return CheckResult("overfit_one_batch", passed, numbers, note=note), findings


def _overfit_causes(run: OverfitRun, e: PreflightEvidence) -> tuple[Cause, ...]:
    """Why one batch could not be memorised, ranked from what the other checks measured."""
    best, fall = run.best, run.fall
    causes = []
    if e.softmax_rows:
        floor = softmax_floor(e.num_classes) if e.num_classes else None
        numbers = {"softmax_rows": True, "best_loss": best}
        if floor is not None:
            numbers["softmax_floor"] = floor
        near = floor is not None and best >= 0.9 * floor
        causes.append(Cause("wrong_loss_for_task", 0.9 if near else 0.7, numbers))
    if e.stale_share is not None and e.stale_share >= 0.5:
        causes.append(Cause("stale_gradients", 0.9, {"stale_share": e.stale_share}))
    if e.invalid_targets:
        causes.append(Cause("invalid_targets", 0.85, {"labels_out_of_range": True}))
    if e.target_scale is not None and e.target_scale > TARGET_SCALE_HIGH:
        causes.append(Cause("unnormalized_targets", 0.8, {"target_rms": e.target_scale}))
    if e.no_gradient:
        causes.append(Cause("gradient_flow_cut", 0.6, {"no_gradient": e.no_gradient[:10]}))
    if e.zero_gradient:
        causes.append(Cause("dead_relu_units", 0.6, {"zero_gradient": e.zero_gradient[:10]}))
    if e.unnormalized_inputs:
        causes.append(Cause("unnormalized_inputs", 0.5, {"unnormalized_inputs": True}))
    causes += e.model_causes()
    if not causes:
        if fall >= 0.3:  # it learns, but cannot hold one batch: the model is too small for it
            causes.append(Cause("too_little_capacity", 0.5))  # a guess from the shape, not evidence
        causes += [Cause("wrong_loss_for_task", 0.3), Cause("learning_rate_too_low", 0.2),
                   Cause("gradient_flow_cut", 0.15)]
    return tuple(causes)


def _ladder_trend(runs: Sequence[OverfitRun]) -> tuple[Cause, ...]:
    """A learning rate too low, when no rate memorised the batch but the loss fell more the higher
    the rate: the highest rate tried fell the most, and at least twice as much as the configured one."""
    higher = [run for run in runs if run.multiplier > 1]
    if not higher or not runs:
        return ()
    top = max(higher, key=lambda run: run.multiplier)
    if top.fall >= max(run.fall for run in runs) and top.fall >= 2 * runs[0].fall and top.fall > 0.05:
        return (Cause("learning_rate_too_low", 0.7, {"fall_at_configured": round(runs[0].fall, 4),
                                                      f"fall_at_{top.multiplier:g}x": round(top.fall, 4)}),)
    return ()


def check_learning_rate(pick: float | None, diverged_at: float | None, lrs: Sequence[float],
                        losses: Sequence[float]) -> tuple[CheckResult, list[Finding]]:
    """The configured learning rate (multiplier 1) against a range test's pick (a multiplier of it).

    Args:
        pick: the range test's pick as a multiple of the configured LR, ``None`` for no pick.
        diverged_at: the multiplier at which the probe's loss diverged, ``None`` if it did not.
        lrs, losses: the probe's curve (multipliers, raw losses).
    """
    numbers: dict[str, Any] = {"pick_multiplier": pick, "diverged_at_multiplier": diverged_at,
                               "lrs": [float(f"{v:.4g}") for v in lrs],
                               "losses": [v if math.isfinite(v) else None for v in losses]}
    if pick is None:
        return CheckResult("lr_range_test", None, numbers, note="the loss did not fall clearly: no pick"), []
    findings = []
    start = sum(losses[:3]) / len(losses[:3]) if losses else math.nan
    above = [v for lr, v in zip(lrs, losses) if lr >= 1.0]
    only_rose = bool(above) and all(not math.isfinite(v) or v >= start for v in above)
    numbers["loss_only_rose_from_configured"] = only_rose
    if 1.0 / pick >= LR_FACTOR_WARN and (only_rose or (diverged_at is not None and diverged_at <= 1.0)):
        where = (f"diverged at {diverged_at:.3g}x the configured rate" if diverged_at is not None and diverged_at <= 1
                 else "never fell below its start at or above the configured rate")
        seen = (f"The learning-rate range test's loss {where}; its pick is {pick:.3g}x the configured rate "
                f"({1 / pick:.0f}x lower). At the configured rate the loss will climb or collapse.")
        evidence = {"pick_multiplier": pick, "diverged_at_multiplier": diverged_at, "loss_only_rose": only_rose}
        findings.append(finding("divergence", "warning", seen, step=0, evidence=evidence,
                                causes=(Cause("learning_rate_too_high", 0.85, evidence),)))
    elif pick >= LR_FACTOR_WARN:
        severity = "warning" if pick >= 100 else "info"
        seen = (f"The learning-rate range test picks {pick:.3g}x the configured learning rate: at the configured "
                "rate the loss falls far more slowly than it can.")
        findings.append(finding("no_learning", severity, seen, step=0, evidence={"pick_multiplier": pick},
                                causes=(Cause("learning_rate_too_low", 0.8, {"pick_multiplier": pick}),)))
    failed = [f for f in findings if f.severity != "info"]
    return CheckResult("lr_range_test", not failed, numbers, note="; ".join(f.causes[0].cause for f in failed)), findings
