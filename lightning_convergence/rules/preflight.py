"""The verdicts of the preflight check: the practitioners' debugging routine before a long run.

Fed host numbers that the callback measured in the first seconds of a fit (no Lightning here),
each function judges one check and returns a :class:`CheckResult` (passed or failed, with its
numbers) and the findings it gives, causes ranked from the evidence every check gathered
(:class:`PreflightEvidence`):

- :func:`check_data`: the first batches: labels that sit one class per batch in an unshuffled
  loader, regression targets far from unit scale, and what :class:`InputHealthRule` says;
- :func:`check_initial_loss`: the loss at initialisation against ``ln K`` for ``K`` classes (a much
  larger value is a mis-scaled initialisation or input), and outputs whose rows already sum to 1;
- :func:`check_gradients`: trainable parameters that get no gradient, or an exactly zero one, named by
  module path; non-finite gradients from a finite loss; gradients added to the previous step's
  (never zeroed);
- :func:`check_overfit`: whether the model can drive the loss of one batch near zero; when it
  cannot, the cause ranked from the other checks' evidence; when it can but learns nothing that
  carries to another batch, labels that do not belong to their inputs;
- :func:`check_learning_rate`: the configured learning rate against a range test's pick.

References:
    Andrej Karpathy, "A Recipe for Training Neural Networks" (2019): verify the loss at init
    (``-ln(1/K)``), overfit one batch, check that gradients reach every input.
    Josh Tobin, "Troubleshooting Deep Neural Networks" (2019): overfit a single batch; the bugs
    that most often stop it (a softmax before the loss, gradients never zeroed, labels mismatched).
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017 (the LR range test).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_convergence.rules import advice
from lightning_convergence.rules.findings import Cause, Finding
from lightning_convergence.rules.input_health import InputHealthRule, PartSummary

# The loss of one batch must fall to a fifth of where it started: a healthy setup memorises a
# batch in a few dozen steps at its tuned LR (measured: tests/callbacks/test_preflight_check.py).
OVERFIT_FALL = 0.2
# A model that memorised its batch (loss down by half or more) but whose loss on another batch
# fell by less than this share learned nothing that carries: labels that do not fit their inputs.
HELDOUT_FALL = 0.03
INITIAL_LOSS_RATIO = 2.0  # loss at init over ln K above this: the start is mis-scaled
LR_FACTOR_WARN = 30.0  # the configured LR this many times off the range test's pick
TARGET_SCALE_HIGH = 1e3
SHUFFLED_SHARE = 0.5  # distinct labels per batch over what a shuffled batch of that size holds


@dataclass
class CheckResult:
    """One check of the preflight, as the report's ``preflight`` section shows it.

    Attributes:
        name: ``data``, ``initial_loss``, ``gradients``, ``overfit_one_batch`` or ``lr_range_test``.
        passed: ``True``, ``False``, or ``None`` when it could not run (``note`` says why).
        numbers: what it measured.
        seconds: the wall time it took.
        note: a short sentence (why it failed, or why it did not run).
    """

    name: str
    passed: bool | None
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "passed": self.passed, "seconds": round(self.seconds, 4),
                "note": self.note, "numbers": _plain(self.numbers)}


@dataclass
class PreflightEvidence:
    """What the checks found that the others' verdicts read (filled in as the checks run)."""

    num_classes: int | None = None
    softmax_rows: bool = False
    target_scale: float | None = None
    invalid_targets: bool = False
    unnormalized_inputs: bool = False
    no_gradient: list[str] = field(default_factory=list)
    stale_share: float | None = None
    initial_loss: float | None = None


def collapse_paths(flagged: Iterable[str], names: Sequence[str]) -> list[str]:
    """The fewest module paths that cover the flagged parameter names: a module whose every
    parameter is flagged stands for them all.

    Example:
        >>> names = ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "head.weight", "head.bias"]
        >>> collapse_paths(["encoder.0.weight", "encoder.0.bias", "encoder.2.weight"], names)
        ['encoder']
        >>> collapse_paths(["head.bias"], names)
        ['head.bias']
    """
    flagged = set(flagged)
    out: list[str] = []
    for name in names:
        if name not in flagged:
            continue
        parts = name.split(".")
        path = name
        for cut in range(1, len(parts)):
            prefix = ".".join(parts[:cut])
            if all(n in flagged for n in names if n.startswith(prefix + ".")):
                path = prefix
                break
        if path not in out:
            out.append(path)
    return out


def expected_distinct(num_classes: int, batch_size: int) -> float:
    """How many distinct labels a batch of ``batch_size`` drawn at random from ``num_classes``
    equally frequent classes holds on average: ``K (1 - (1 - 1/K)^B)``.

    Example:
        >>> round(expected_distinct(10, 32), 2), round(expected_distinct(10, 1), 2)
        (9.66, 1.0)
    """
    return num_classes * (1.0 - (1.0 - 1.0 / num_classes) ** batch_size)


def check_data(parts: list[PartSummary], batch_distinct: list[int], batch_size: int, sequential: bool,
               evidence: PreflightEvidence) -> tuple[CheckResult, list[Finding]]:
    """The first batches: scale and non-finite values (:class:`InputHealthRule`), class labels
    against ``num_classes``, labels per batch against a shuffled batch, regression targets.

    Args:
        parts: one summary per batch part over the batches read.
        batch_distinct: per batch read, the number of distinct integer labels (empty: no labels).
        batch_size: samples per batch.
        sequential: whether the loader reads its data in order (a ``SequentialSampler``).
        evidence: read for ``num_classes``; ``target_scale``, ``invalid_targets`` and
            ``unnormalized_inputs`` are written.
    """
    findings = InputHealthRule(num_classes=evidence.num_classes).evaluate(parts)
    evidence.invalid_targets = any(f.kind == "invalid_targets" for f in findings)
    evidence.unnormalized_inputs = any(f.kind == "unnormalized_inputs" for f in findings)
    numbers: dict[str, Any] = {"batches": len(batch_distinct) or max((p.batches for p in parts), default=0),
                               "sequential_sampler": sequential}
    targets = [max(p.rms) for p in parts if p.is_target and p.floating and p.rms and math.isfinite(max(p.rms))]
    if targets:
        evidence.target_scale = numbers["target_rms"] = max(targets)
        if evidence.target_scale > TARGET_SCALE_HIGH:
            seen = (f"The regression target has a root mean square of {evidence.target_scale:.3g} in the first "
                    f"batches; a target near unit scale trains with ordinary learning rates, this one makes the "
                    f"loss and its gradients about {evidence.target_scale ** 2:.2g} times larger.")
            findings.append(_finding("unnormalized_inputs", "warning", seen, layer="target",
                                    evidence={"target_rms": evidence.target_scale},
                                    causes=(Cause("unnormalized_targets", 0.9,
                                                  {"target_rms": evidence.target_scale}),)))
    if batch_distinct:
        per_batch = sum(batch_distinct) / len(batch_distinct)
        classes = evidence.num_classes or max(batch_distinct)
        share = per_batch / expected_distinct(classes, batch_size) if classes > 1 else 1.0
        numbers.update(labels_per_batch=per_batch, shuffled_labels_per_batch=expected_distinct(classes, batch_size),
                       label_share=share)
        if share < SHUFFLED_SHARE and len(batch_distinct) >= 2:
            order = "the loader reads the data in order (shuffle=False)" if sequential else "the sampler is not random"
            seen = (f"The first {len(batch_distinct)} training batches hold {per_batch:.1f} distinct labels each, "
                    f"where a shuffled batch of {batch_size} from {classes} classes holds "
                    f"{expected_distinct(classes, batch_size):.1f}, and {order}: training will see one class "
                    f"at a time and the loss will saw-tooth at every class change.")
            findings.append(_finding("oscillation", "warning" if sequential else "info", seen,
                                    evidence={"label_share": share, "labels_per_batch": per_batch},
                                    causes=(Cause("unshuffled_data", 0.85, {"label_share": round(share, 3),
                                                                           "sequential_sampler": sequential}),)))
    failed = [f for f in findings if f.severity != "info"]
    note = "; ".join(sorted({f.kind for f in failed}))
    return CheckResult("data", not failed, numbers, note=note), findings


def check_initial_loss(loss: float, evidence: PreflightEvidence) -> tuple[CheckResult, list[Finding]]:
    """The loss at initialisation against ``ln K`` (classification with ``K`` classes).

    A loss far above ``ln K`` is a start with confident wrong outputs (weights or inputs at the
    wrong scale): info, since the first steps usually undo it; the overfit check says whether it
    stops training. Outputs whose rows sum to 1 are recorded for that check.
    """
    evidence.initial_loss = loss
    numbers: dict[str, Any] = {"loss": loss, "softmax_rows": evidence.softmax_rows}
    findings: list[Finding] = []
    if not math.isfinite(loss):
        seen = f"The loss at initialisation is {loss}, before any update."
        findings.append(_finding("nonfinite_loss", "critical", seen, evidence={"loss": str(loss)}, step=0,
                                causes=(Cause("nonfinite_data", 0.5), Cause("bad_initialization", 0.3),
                                        Cause("low_precision_overflow", 0.2))))
        return CheckResult("initial_loss", False, numbers, note="non-finite"), findings
    k = evidence.num_classes
    if k is None or k < 2:
        return CheckResult("initial_loss", True, numbers, note="no class count: not compared"), findings
    expected = math.log(k)
    numbers.update(expected=expected, ratio=loss / expected)
    if loss > INITIAL_LOSS_RATIO * expected:
        seen = (f"The loss at initialisation is {loss:.4g}, {loss / expected:.1f}x ln({k}) = {expected:.3f}, what "
                f"{k} classes give when the outputs start near uniform: the model starts confidently wrong.")
        cause = "unnormalized_inputs" if evidence.unnormalized_inputs else "bad_initialization"
        findings.append(_finding("poor_initialization", "info", seen, evidence={"loss": loss, "expected": expected},
                                causes=(Cause(cause, 0.7, {"initial_loss": loss, "ln_k": expected}),)))
        return CheckResult("initial_loss", False, numbers, note=f"{loss / expected:.1f}x ln K"), findings
    return CheckResult("initial_loss", True, numbers), findings


def check_gradients(names: Sequence[str], missing: Iterable[str], zero: Iterable[str], nonfinite: Iterable[str],
                    frozen: Iterable[str], loss_finite: bool, stale_share: float | None,
                    grad_norms: Sequence[float], evidence: PreflightEvidence) -> tuple[CheckResult, list[Finding]]:
    """Every trainable parameter gets a finite, non-zero gradient from the first backward pass,
    and each step's gradient replaces the previous one.

    Args:
        names: the trainable parameters' names, in the module's order.
        missing, zero, nonfinite: the names whose gradient was ``None``, exactly zero, or held NaN/Inf.
        frozen: the names with ``requires_grad=False`` (reported, not judged: freezing is often meant).
        loss_finite: whether that backward's loss was finite.
        stale_share: the share of parameters whose gradient, at a later step, was added to the
            one of the step before (``None``: not measured).
        grad_norms: the total gradient norm at each step measured.
    """
    missing, zero = collapse_paths(missing, names), collapse_paths(zero, names)
    nonfinite = collapse_paths(nonfinite, names)
    evidence.no_gradient, evidence.stale_share = missing + zero, stale_share
    numbers: dict[str, Any] = {"trainable": len(names), "no_gradient": missing, "zero_gradient": zero,
                               "nonfinite_gradient": nonfinite, "frozen": collapse_paths(frozen, list(frozen)),
                               "stale_share": stale_share, "grad_norms": list(grad_norms)}
    findings = []
    if missing or zero:
        cut = ", ".join(f"`{p}`" for p in (missing + zero)[:6]) + (" ..." if len(missing + zero) > 6 else "")
        how = []
        if missing:
            how.append(f"no gradient at all ({len(missing)})")
        if zero:
            how.append(f"a gradient of exactly zero ({len(zero)})")
        seen = (f"Trainable parameters get {' and '.join(how)} from the first backward pass: {cut}. They will "
                f"never change, while the rest of the model trains.")
        findings.append(_finding("vanishing_gradients", "warning", seen, layer=(missing + zero)[0],
                                evidence={"no_gradient": missing, "zero_gradient": zero},
                                causes=(Cause("gradient_flow_cut", 0.9 if missing else 0.6,
                                              {"no_gradient": missing[:10], "zero_gradient": zero[:10]}),
                                        Cause("dead_relu_units", 0.0 if missing else 0.3))))
    if nonfinite and loss_finite:
        seen = (f"The gradient of {', '.join(f'`{p}`' for p in nonfinite[:6])} holds NaN/Inf while the loss is "
                "finite: an operation in the forward pass has no finite derivative at some input.")
        findings.append(_finding("nonfinite_gradients", "critical", seen, layer=nonfinite[0],
                                evidence={"nonfinite_gradient": nonfinite},
                                causes=(Cause("non_differentiable_operation", 0.9, {"nonfinite_gradient": nonfinite[:10]}),
                                        Cause("low_precision_overflow", 0.1))))
    if stale_share is not None and stale_share >= 0.5:
        growth = grad_norms[-1] / grad_norms[0] if len(grad_norms) >= 2 and grad_norms[0] > 0 else None
        grew = f"; the gradient norm grew {growth:.1f}x over {len(grad_norms)} steps" if growth else ""
        seen = (f"Each step's gradient is added to the previous step's: {stale_share:.0%} of the parameters still "
                f"held the last step's gradient when the next backward pass began{grew}. The optimizer then steps "
                "along the sum of every gradient so far.")
        findings.append(_finding("exploding_gradients", "warning", seen,
                                evidence={"stale_share": stale_share, "grad_norm_growth": growth},
                                causes=(Cause("stale_gradients", 0.95, {"stale_share": stale_share,
                                                                        "grad_norm_growth": growth}),)))
    failed = [f for f in findings if f.severity != "info"]
    return CheckResult("gradients", not failed, numbers, note="; ".join(f.kind for f in failed)), findings


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
            findings.append(_finding("divergence" if rose else "no_learning", "warning", seen, step=0, evidence=rate,
                                    causes=(Cause("learning_rate_too_high", 0.85, rate),)))
        elif first.fall < 0.5 * (1.0 - OVERFIT_FALL) and not evidence.no_gradient:
            seen = (f"At the configured learning rate one batch's loss fell only {first.fall:.0%} in {steps} steps; at "
                    f"{done.multiplier:g}x that rate the model memorised it ({done.start:.4g} -> {done.best:.4g}).")
            findings.append(_finding("no_learning", "warning", seen, step=0, evidence=rate,
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
        findings.append(_finding("no_learning", "warning", seen, step=0,
                                evidence={"start": first.start, "best": first.best, "fall": first.fall},
                                causes=_overfit_causes(first, evidence)))
    held_fall = None if held is None else held.fall
    numbers["heldout"] = None if held is None else {"lr_multiplier": held.multiplier, "losses": list(held.heldout),
                                                    "fall": held_fall}
    if done is not None and held_fall is not None and held_fall < HELDOUT_FALL:
        seen = (f"The model memorises one batch (loss {done.start:.4g} -> {done.best:.4g}) but, trained on other "
                f"batches, its loss on a batch it never saw did not fall ({held.heldout[0]:.4g} -> at best "
                f"{min(held.heldout):.4g}): it learns nothing that carries from one batch to the next, which is "
                "what labels that do not belong to their inputs give.")
        findings.append(_finding("no_learning", "warning", seen, step=0,
                                evidence={"heldout_start": held.heldout[0], "heldout_best": min(held.heldout)},
                                causes=(Cause("labels_mismatched", 0.75, {"heldout_fall": round(held_fall, 4),
                                                                          "batch_fall": round(done.fall, 4)}),
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
    if e.unnormalized_inputs:
        causes.append(Cause("unnormalized_inputs", 0.5, {"unnormalized_inputs": True}))
    if not causes:
        if fall >= 0.3:  # it learns, but cannot hold one batch: the model is too small for it
            causes.append(Cause("too_little_capacity", 0.5, {"fall": round(fall, 4)}))
        causes += [Cause("wrong_loss_for_task", 0.3), Cause("learning_rate_too_low", 0.2),
                   Cause("gradient_flow_cut", 0.15)]
    return tuple(causes)


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
        findings.append(_finding("divergence", "warning", seen, step=0, evidence=evidence,
                                causes=(Cause("learning_rate_too_high", 0.85, evidence),)))
    elif pick >= LR_FACTOR_WARN:
        severity = "warning" if pick >= 100 else "info"
        seen = (f"The learning-rate range test picks {pick:.3g}x the configured learning rate: at the configured "
                "rate the loss falls far more slowly than it can.")
        findings.append(_finding("no_learning", severity, seen, step=0, evidence={"pick_multiplier": pick},
                                causes=(Cause("learning_rate_too_low", 0.8, {"pick_multiplier": pick}),)))
    failed = [f for f in findings if f.severity != "info"]
    return CheckResult("lr_range_test", not failed, numbers, note="; ".join(f.causes[0].cause for f in failed)), findings


def _finding(kind: str, severity: str, observation: str, **fields: Any) -> Finding:
    """A finding whose remedies start with what answers its top cause, then the kind's own."""
    finding = Finding(kind, severity, observation, **fields)
    top = finding.top_cause.cause if finding.top_cause is not None else None
    first = advice.CAUSE_REMEDIES.get(top, ())
    rest = [r for r in advice.REMEDIES.get(kind, ()) if r not in first]
    return Finding(kind, severity, observation, remedies=(*first, *rest), **fields)


def _plain(value: Any) -> Any:
    """JSON-ready: non-finite floats as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
