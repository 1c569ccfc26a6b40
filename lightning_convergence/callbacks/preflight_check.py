"""PreflightCheck: the practitioners' debugging routine, run automatically in the first seconds of fit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from typing_extensions import override

from lightning_convergence import tags
from lightning_convergence.callbacks._preflight_data import class_dim, softmax_rows, summarize_batches
from lightning_convergence.callbacks._preflight_runs import HELDOUT_STEPS, RANGE_START, held_out, overfit, range_test
from lightning_convergence.callbacks._preflight_steps import (PreflightSteps, StaleGradientWatch, batch_size_of,
                                                              output_capture, read_batches)
from lightning_convergence.callbacks._trainer_reads import module_num_classes, over_ranks
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.callbacks.initialization_audit import layers_and_activations
from lightning_convergence.recorder.tensorboard import write_text
from lightning_convergence.remedies.lr_range_test import RangeTestResult, suggest
from lightning_convergence.rules import preflight as rules
from lightning_convergence.rules import preflight_training as training
from lightning_convergence.rules.findings import Finding
from lightning_convergence.rules.init_audit import audit_weight
from lightning_convergence.stats.sharding import is_dtensor
from lightning_convergence.validation import check_bool, check_positive_float, check_positive_int

DEGENERATE = ("all_zero", "identical_rows", "nonfinite")  # the audit's problems that stop a model learning
CHECKS = ("data", "initial_loss", "gradients", "overfit_one_batch", "lr_range_test")
COST_SHARE = 0.02  # on by default when its steps are at most this share of the planned run
# The learning rates of the single-batch overfit, as multiples of the configured one, tried in
# this order until one memorises the batch: lower first (a rate too high is the usual culprit).
LADDER = (1.0, 0.1, 10.0, 0.01, 100.0)


@dataclass(frozen=True)
class _Measured:
    """What the preflight's steps measured, for the rules."""

    first: float  # the loss at initialisation (the range test's first step)
    first_seconds: float
    range_result: RangeTestResult
    range_seconds: float
    runs: list[training.OverfitRun]
    held: training.HeldOutRun | None
    complete: bool  # every rate of the ladder that had to be tried was
    overfit_seconds: float
    stale_share: float | None


class PreflightCheck(ConvergenceCallback):
    """Runs the debugging checklist practitioners recommend before a long run, at the start of a
    fresh fit, and then puts everything back so that the run proceeds exactly as without it.

    From a snapshot of everything it touches (weights and buffers, optimizer state and
    hyperparameters, LR schedulers, the fp16 scaler, random number generators, gradients, the
    loop's step counters) it:

    1. reads the first ``num_batches`` batches: input and target scale, NaN/Inf, labels against
       the number of classes, labels per batch against a shuffled batch (an unshuffled loader);
    2. compares the loss at initialisation with ``ln K`` for ``K`` classes, and checks whether the
       outputs' rows already sum to 1 (a softmax before a cross-entropy);
    3. names, by module path, every trainable parameter that gets no gradient or an exactly zero
       one from the first backward pass, non-finite gradients from a finite loss, and gradients
       added to the previous step's (never zeroed, under manual optimisation);
    4. runs a learning-rate range test over those batches (``range_test_steps`` steps, the rate
       from 1e-3 to 1e3 times the configured one) and compares the configured rate with its pick;
    5. overfits the first batch for at most ``overfit_steps`` steps with the run's optimizer at a
       sane rate (the configured one, brought within [pick, 10 x pick] of the range test); a setup
       that cannot is a bug, its cause ranked from the other checks; a model that memorises the
       batch but whose loss on the second batch does not fall has labels that do not fit its inputs;
    6. restores the snapshot. With ``auto_remediate=True``, when the learning-rate check failed,
       the range test's pick is applied through the shared LR control (an ``lr_scale`` with reason
       ``lr_range_test``).

    Its findings are ordinary diagnoses at step 0 with ranked causes; the checks, each passed or
    failed with its numbers and time, are the ``preflight`` section of ``convergence_report.json``,
    a TensorBoard text and one console line. Under DDP every rank runs it on its own batches; the
    losses it judges are averaged over the ranks, so the range test and overfit verdicts agree.
    It does not run (one info line) under manual optimisation with several optimizers, when
    resuming from a checkpoint, with ``fast_dev_run``, or on DTensor-sharded parameters (FSDP2).

    Cost: ``range_test_steps + overfit_steps`` optimizer steps at most (fewer when the loss
    diverges or the batch is memorised early), a few forward passes, ``num_batches`` batches read
    from a fresh pass over the loader, and a snapshot (about 3x the parameters in host memory with
    Adam) held while it runs; stopped after ``max_seconds``.

    Args:
        enabled: ``True`` runs it, ``False`` never; ``None`` (default) runs it when its steps are at
            most 2% of the planned run (``trainer.estimated_stepping_batches``).
        auto_remediate: apply the range test's learning rate when the configured one failed the check.
        num_batches: batches read for the data checks and the range test (at least 2).
        range_test_steps: optimizer steps of the range test (at least 5).
        overfit_steps: optimizer steps of the single-batch overfit, at most (at least 5).
        max_seconds: the time after which the checks still running stop (> 0).
        clock: the time source in seconds (injected in tests).

    Raises:
        ValueError: an argument out of range, named.
        TypeError: a non-bool ``enabled`` or ``auto_remediate``.

    Example:
        >>> PreflightCheck(enabled=True).overfit_steps
        100

    References:
        Andrej Karpathy, "A Recipe for Training Neural Networks" (2019); Josh Tobin,
        "Troubleshooting Deep Neural Networks" (2019); L. N. Smith, "Cyclical Learning Rates for
        Training Neural Networks", WACV 2017 (the LR range test).
    """

    def __init__(self, enabled: bool | None = None, auto_remediate: bool = False, num_batches: int = 8,
                 range_test_steps: int = 40, overfit_steps: int = 100, max_seconds: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter, report_window_steps: int = 500) -> None:
        super().__init__(auto_remediate=auto_remediate, report_window_steps=report_window_steps)
        if enabled is not None:
            check_bool("enabled", enabled)
        check_positive_int("num_batches", num_batches)
        check_positive_int("range_test_steps", range_test_steps)
        check_positive_int("overfit_steps", overfit_steps)
        check_positive_float("max_seconds", max_seconds)
        for name, value, least in (("num_batches", num_batches, 2), ("range_test_steps", range_test_steps, 5),
                                   ("overfit_steps", overfit_steps, 5)):
            if value < least:
                raise ValueError(f"`{name}` must be at least {least}, got {value!r}.")
        if not callable(clock):
            raise TypeError(f"`clock` must be callable, got {clock!r}.")
        self.enabled, self.num_batches = enabled, num_batches
        self.range_test_steps, self.overfit_steps, self.max_seconds = range_test_steps, overfit_steps, max_seconds
        self.clock = clock
        self._section: dict[str, Any] | None = None
        self._steps: PreflightSteps | None = None
        self._grads: dict[str, Any] | None = None
        self._grad_norms: list[float] = []
        self._watch: StaleGradientWatch | None = None
        self._first_norms: list[float] = []

    @property
    def section(self) -> dict[str, Any] | None:
        """The report's ``preflight`` section of this fit (or of the fit it resumed), once decided:
        ``{"ran": False, "reason": ...}``, or ``{"ran": True, "seconds", "passed", "checks": [...]}``."""
        return self._section

    # ----------------------------------------------------------------- when it runs

    def refusal(self, trainer: Trainer, pl_module: LightningModule) -> str | None:
        """Why it cannot run safely in this fit, or ``None``."""
        if trainer.fast_dev_run:
            return "fast_dev_run is on"
        if trainer.ckpt_path is not None or trainer.global_step > 0:
            return "the fit resumes from a checkpoint"
        if not pl_module.automatic_optimization and len(trainer.optimizers) > 1:
            return "manual optimisation with several optimizers"
        if not trainer.optimizers:
            return "the module has no optimizer"
        if any(is_dtensor(p) for p in pl_module.parameters()):
            return "the parameters are sharded DTensors (FSDP2, tensor parallelism): not supported yet"
        return None

    def planned_cost(self) -> int:
        """Optimizer steps it takes on a healthy setup, at most: the range test, one overfit, the
        held-out steps (a setup that fails the overfit tries more rates, a cost then well spent)."""
        return self.range_test_steps + self.overfit_steps + HELDOUT_STEPS

    def due(self, trainer: Trainer) -> bool:
        """Whether it runs in this fit: forced, or its steps are at most 2% of the planned run."""
        if self.enabled is not None:
            return self.enabled
        planned = trainer.estimated_stepping_batches
        return math.isfinite(planned) and self.planned_cost() <= COST_SHARE * planned or math.isinf(planned)

    # ----------------------------------------------------------------- hooks

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._section is not None:  # resumed: the report keeps the checks that ran at the start
            self.context(trainer).log.sections["preflight"] = self._section
            return
        if not self.due(trainer):
            return
        reason = self.refusal(trainer, pl_module)
        if reason is not None:
            rank_zero_info(f"PreflightCheck: not run: {reason}.")
            self._section = {"ran": False, "reason": reason}
            self.context(trainer).log.sections["preflight"] = self._section
            return
        started = self.clock()
        with PreflightSteps(trainer, pl_module) as steps:
            self._steps = steps
            try:
                results, findings, pick = self._run(trainer, pl_module, steps, started)
            except Exception as error:  # a fault in the user's step: say so, restore, let the run meet it
                results, findings, pick = [rules.CheckResult("error", None, note=f"{type(error).__name__}: {error}")], [], None
            finally:
                self._steps = None
        self._finish(trainer, results, findings, pick, self.clock() - started)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        if self._steps is None:
            return
        params = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        grads = [p.grad.detach().float() for _, p in params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0
        self._grad_norms.append(norm)  # host read: preflight only
        if self._watch is not None:
            self._watch.steps += 1  # the next backward pass must find the gradients zeroed
        if self._grads is None:  # the first backward pass of the preflight: who got a gradient
            self._grads = {
                "names": [n for n, _ in params],
                "missing": [n for n, p in params if p.grad is None],
                "zero": [n for n, p in params if p.grad is not None and not bool(p.grad.ne(0).any())],
                "nonfinite": [n for n, p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())],
                "ratio": _first_to_last_rms([p.grad for _, p in params if p.dim() >= 2]),
            }

    # ----------------------------------------------------------------- the checks

    def _run(self, trainer: Trainer, pl_module: LightningModule, steps: PreflightSteps,
             started: float) -> tuple[list[rules.CheckResult], list[Finding], float | None]:
        """Measure (the steps), then judge (the rules, on host numbers)."""
        evidence = rules.PreflightEvidence(num_classes=module_num_classes(pl_module), bad_init=_bad_init(pl_module),
                                           saturating=any(isinstance(m, (nn.Sigmoid, nn.Tanh))
                                                          for m in pl_module.modules()))
        t0 = self.clock()
        batches, sequential = read_batches(trainer, self.num_batches)
        if not batches:
            return [rules.CheckResult("data", None, note="the training loader gave no batch")], [], None
        parts, distinct, target = summarize_batches(batches)
        batch_size = batch_size_of(batches[0]) or 1
        read_seconds = self.clock() - t0
        m = self._measure(pl_module, steps, batches, target, evidence, started)
        data, data_findings = rules.check_data(parts, distinct, batch_size, sequential, evidence)  # K known now
        data.seconds = read_seconds
        initial, initial_findings = rules.check_initial_loss(m.first, evidence)
        grads = self._grads or {"names": [], "missing": [], "zero": [], "nonfinite": [], "ratio": None}
        evidence.grad_ratio = grads["ratio"]
        frozen = [n for n, p in pl_module.named_parameters() if not p.requires_grad]
        gradients, gradient_findings = rules.check_gradients(
            grads["names"], grads["missing"], grads["zero"], grads["nonfinite"], frozen, math.isfinite(m.first),
            m.stale_share, self._first_norms, evidence)
        initial.seconds = gradients.seconds = m.first_seconds  # both read off the one first step
        result = m.range_result
        diverged_at = result.lrs[-1] if result.diverged and result.lrs else None
        lr, lr_findings = training.check_learning_rate(result.pick, diverged_at, result.lrs, result.losses)
        lr.seconds = m.range_seconds
        overfit, overfit_findings = training.check_overfit(m.runs, m.held, evidence, complete=m.complete)
        overfit.seconds = m.overfit_seconds
        findings = data_findings + initial_findings + gradient_findings + lr_findings + overfit_findings
        return [data, initial, gradients, overfit, lr], findings, _remedy_factor(findings, result.pick, m.runs)

    def _measure(self, pl_module: LightningModule, steps: PreflightSteps, batches: list, target: Any,
                 evidence: rules.PreflightEvidence, started: float) -> _Measured:
        """The steps: the range test (its first step also gives the loss, output and gradients at
        initialisation), then the overfit ladder and the held-out steps, each from the snapshot."""
        self._grads, self._grad_norms, self._first_norms = None, [], []
        batch_size = batch_size_of(batches[0]) or 1
        watch = StaleGradientWatch([p for p in pl_module.parameters() if p.requires_grad]) if steps.manual else None
        self._watch = watch
        try:
            t0 = self.clock()
            steps.set_multiplier(RANGE_START)
            with output_capture(pl_module, batch_size) as capture:
                first = steps.step(batches[0], 0)
            first_seconds = self.clock() - t0
            curve = range_test(steps, batches, first, self.range_test_steps, lambda: self._out_of_time(started))
            range_seconds = self.clock() - t0 - first_seconds
            output = capture.output
            dim = class_dim(output, target) if output is not None else None
            if evidence.num_classes is None and dim is not None:
                evidence.num_classes = int(output.shape[dim])
            evidence.softmax_rows = dim is not None and softmax_rows(output, dim)
            t0 = self.clock()
            runs = self._overfit_ladder(steps, batches, started)
            complete = bool(runs) and (runs[-1].memorised or (len(runs) == len(LADDER) and not self._out_of_time(started)))
            memorised = next((run.multiplier for run in runs if run.memorised), None)
            held = None
            if memorised is not None and len(batches) >= 3 and not steps.manual and not self._out_of_time(started):
                held = held_out(steps, batches, memorised)
            overfit_seconds = self.clock() - t0
        finally:
            if watch is not None:
                watch.remove()
            self._watch = None
        return _Measured(first, first_seconds, suggest(curve, half_width=1),  # 3 points: a short probe diverges
                         range_seconds, runs, held, complete, overfit_seconds,  # soon after its minimum
                         None if watch is None else watch.share)

    def _out_of_time(self, started: float) -> bool:
        return self.clock() - started > self.max_seconds

    def _overfit_ladder(self, steps: PreflightSteps, batches: list, started: float) -> list[training.OverfitRun]:
        """Overfit the first batch at the configured learning rate; when that does not memorise
        it, from the same start at the next rate of :data:`LADDER`, until one does."""
        runs = []
        for multiplier in LADDER:
            if self._out_of_time(started):
                break
            steps.reset()
            self._grad_norms = []
            runs.append(overfit(steps, batches[0], multiplier, self.overfit_steps, lambda: self._out_of_time(started)))
            if len(runs) == 1:
                self._first_norms = list(self._grad_norms)  # the gradient norms at the configured rate
            if runs[-1].memorised:
                break
        return runs

    # ----------------------------------------------------------------- the outcome

    def _finish(self, trainer: Trainer, results: list[rules.CheckResult], findings: list[Finding],
                pick: float | None, seconds: float) -> None:
        self._agree(trainer, results)
        for finding in findings:
            self.record(trainer, finding, step=0)
        if pick is not None and self.is_acting(trainer):
            self.own_lr(trainer, lambda optimizer, group: pick)
            self.record_intervention(trainer, "lr_scale", 0, {"reason": "lr_range_test", "factor": pick,
                                                              "source_check": "preflight"})
        failed = [r.name for r in results if r.passed is False]
        skipped = [r.name for r in results if r.passed is None]
        self._section = {"ran": True, "seconds": round(seconds, 3), "passed": not failed,
                        "checks": [r.to_dict() for r in results]}
        self.context(trainer).log.sections["preflight"] = self._section
        line = (f"PreflightCheck: {len(results) - len(failed) - len(skipped)}/{len(results)} checks passed in "
                f"{seconds:.1f} s" + (f"; failed: {', '.join(failed)}" if failed else "")
                + (f"; not run: {', '.join(f'{r.name} ({r.note})' for r in results if r.passed is None)}"
                   if skipped else ""))
        rank_zero_info(line)
        write_text(trainer, tags.PREFLIGHT, line + "\n\n" + "\n".join(
            f"- {r.name}: {'passed' if r.passed else 'not run' if r.passed is None else 'FAILED'}"
            f"{' (' + r.note + ')' if r.note else ''}, {r.seconds:.2f} s" for r in results))

    def _agree(self, trainer: Trainer, results: list[rules.CheckResult]) -> None:
        """Under DDP, a check that failed on any rank fails on every rank (each rank read its own
        batches). One all_reduce (MAX) of one flag per check; the losses the other checks judge
        were already averaged over the ranks, so those verdicts agree by construction."""
        if trainer.world_size <= 1:
            return
        flags = torch.tensor([float(any(r.name == name and r.passed is False for r in results)) for name in CHECKS],
                             device=trainer.strategy.root_device)
        agreed = over_ranks(trainer, flags, "max").tolist()  # any rank's failure fails all
        for name, failed in zip(CHECKS, agreed):
            for result in results:
                if result.name == name and failed and result.passed is not False:
                    result.passed, result.note = False, (result.note + "; " if result.note else "") + "failed on another rank"

    @override
    def _remove_hooks(self) -> None:
        self.release_lr()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "section": self._section}

    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._section = state_dict.get("section")


def _remedy_factor(findings: list[Finding], pick: float | None, runs: list[training.OverfitRun]) -> float | None:
    """The factor on the learning rate when a check named it too high or too low: the range
    test's pick when it lies on that side, else the rate at which one batch was memorised."""
    named = {f.top_cause.cause for f in findings if f.severity != "info" and f.top_cause is not None}
    memorised = next((run.multiplier for run in runs if run.memorised), None)
    for cause, side in (("learning_rate_too_high", lambda m: m < 1), ("learning_rate_too_low", lambda m: m > 1)):
        if cause in named:
            if pick is not None and side(pick):
                return pick
            if memorised is not None and side(memorised):
                return memorised
    return None


def _first_to_last_rms(grads: list) -> float | None:
    """The gradient RMS of the first weight matrix over the last one's (module order), or ``None``."""
    grads = [g for g in grads if g is not None and g.numel()]
    if len(grads) < 2:
        return None
    first, last = (float(g.detach().float().pow(2).mean().sqrt()) for g in (grads[0], grads[-1]))
    return first / last if last > 0 and math.isfinite(first) and math.isfinite(last) else None


def _bad_init(pl_module: LightningModule) -> list[str]:
    """The layers whose initial weights the initialisation audit calls degenerate (all zero, or
    identical output units), by module path."""
    flagged = []
    for name, module, activation in layers_and_activations(pl_module):
        finding = audit_weight(name, module.weight.detach(), activation)
        if finding is not None and finding.evidence.get("problem") in DEGENERATE:
            flagged.append(name)
    return flagged
