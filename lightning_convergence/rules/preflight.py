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
- in :mod:`~lightning_convergence.rules.preflight_training`: ``check_overfit``, whether the model
  can drive the loss of one batch near zero (when it cannot, the cause ranked from the other
  checks' evidence; when it can but learns nothing that carries to another batch, labels that do
  not belong to their inputs), and ``check_learning_rate``, the configured learning rate against a
  range test's pick.

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
VANISHING_RATIO = 1e-3  # first layer's gradient RMS over the last one's, below which gradients vanish


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
    no_gradient: list[str] = field(default_factory=list)  # module paths whose gradient is None
    zero_gradient: list[str] = field(default_factory=list)  # module paths whose gradient is exactly zero
    stale_share: float | None = None
    initial_loss: float | None = None
    bad_init: list[str] = field(default_factory=list)  # layers the initialisation audit flags (zero, identical rows)
    grad_ratio: float | None = None  # the first weight's gradient RMS over the last one's, at the first step
    saturating: bool = False  # the model has sigmoid or tanh activations

    @property
    def vanishing(self) -> bool:
        """The first layer gets gradients orders of magnitude smaller than the last."""
        return self.grad_ratio is not None and self.grad_ratio < VANISHING_RATIO

    def model_causes(self) -> list[Cause]:
        """Causes in the model itself that the measurements support: a degenerate initialisation,
        gradients that vanish before the first layer."""
        causes = []
        if self.bad_init:
            causes.append(Cause("bad_initialization", 0.8, {"layers": self.bad_init[:10]}))
        if self.vanishing:
            cause = "saturating_activations" if self.saturating else "missing_normalization_or_residuals"
            causes.append(Cause(cause, 0.75, {"first_to_last_gradient_rms": self.grad_ratio}))
        return causes


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
            findings.append(finding("unnormalized_inputs", "warning", seen, layer="target",
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
            findings.append(finding("oscillation", "warning" if sequential else "info", seen,
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
        findings.append(finding("nonfinite_loss", "critical", seen, evidence={"loss": str(loss)}, step=0,
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
        findings.append(finding("poor_initialization", "info", seen, evidence={"loss": loss, "expected": expected},
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
    evidence.no_gradient, evidence.zero_gradient, evidence.stale_share = missing, zero, stale_share
    numbers: dict[str, Any] = {"trainable": len(names), "no_gradient": missing, "zero_gradient": zero,
                               "nonfinite_gradient": nonfinite, "frozen": collapse_paths(frozen, list(frozen)),
                               "stale_share": stale_share, "grad_norms": list(grad_norms)}
    findings = []
    if missing or zero:
        cut = ", ".join(f"`{p}`" for p in (missing + zero)[:6]) + (" ..." if len(missing + zero) > 6 else "")
        how = []
        if missing:
            how.append("no gradient at all")
        if zero:
            how.append("a gradient of exactly zero")
        seen = (f"Trainable parameters get {' and '.join(how)} from the first backward pass: {cut}. They will "
                f"never change, while the rest of the model trains.")
        findings.append(finding("vanishing_gradients", "warning", seen, layer=(missing + zero)[0],
                                evidence={"no_gradient": missing, "zero_gradient": zero},
                                # None: nothing connects it to the loss; exactly zero: usually a layer whose
                                # ReLUs all died (no unit passes a gradient), less often a product with 0
                                causes=(Cause("gradient_flow_cut", 0.9, {"no_gradient": missing[:10]}),) if missing
                                else (Cause("dead_relu_units", 0.6, {"zero_gradient": zero[:10]}),
                                      Cause("gradient_flow_cut", 0.3, {"zero_gradient": zero[:10]}))))
    if nonfinite and loss_finite:
        seen = (f"The gradient of {', '.join(f'`{p}`' for p in nonfinite[:6])} holds NaN/Inf while the loss is "
                "finite: an operation in the forward pass has no finite derivative at some input.")
        findings.append(finding("nonfinite_gradients", "critical", seen, layer=nonfinite[0],
                                evidence={"nonfinite_gradient": nonfinite},
                                causes=(Cause("non_differentiable_operation", 0.9, {"nonfinite_gradient": nonfinite[:10]}),
                                        Cause("low_precision_overflow", 0.1))))
    if stale_share is not None and stale_share >= 0.5:
        growth = grad_norms[-1] / grad_norms[0] if len(grad_norms) >= 2 and grad_norms[0] > 0 else None
        grew = f"; the gradient norm grew {growth:.1f}x over {len(grad_norms)} steps" if growth else ""
        seen = (f"Each step's gradient is added to the previous step's: {stale_share:.0%} of the parameters still "
                f"held the last step's gradient when the next backward pass began{grew}. The optimizer then steps "
                "along the sum of every gradient so far.")
        findings.append(finding("exploding_gradients", "warning", seen,
                                evidence={"stale_share": stale_share, "grad_norm_growth": growth},
                                causes=(Cause("stale_gradients", 0.95, {"stale_share": stale_share,
                                                                        "grad_norm_growth": growth}),)))
    failed = [f for f in findings if f.severity != "info"]
    return CheckResult("gradients", not failed, numbers, note="; ".join(f.kind for f in failed)), findings


def finding(kind: str, severity: str, observation: str, **fields: Any) -> Finding:
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
