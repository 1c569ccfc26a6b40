"""What the suite's callbacks in one Trainer share: the run's log, the evidence board and one
gradient pass per step.

The context lives beside the Trainer (a weak map, so nothing leaks when the Trainer goes) from
``setup("fit")`` until ``teardown("fit")``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from lightning_convergence.callbacks._sharding import ShardLayout, local_gradients
from lightning_convergence.remedies.lr_control import LRControl
from lightning_convergence.recorder.run_log import ConvergenceLog
from lightning_convergence.rules.causes import Evidence
from lightning_convergence.rules.consequence import ConsequenceJudge
from lightning_convergence.rules.nonfinite_event import NonfiniteEvents
from lightning_convergence.stats import host_sum_of_squares, sum_of_squares, tensor_stats


@dataclass
class _GradientPass:
    key: tuple
    sumsq: Tensor | list[float] | None = None  # [N]; floats on the host path
    full: Tensor | None = None  # [N, 3]


@dataclass
class RunContext:
    """Shared state of one fit: the convergence log, the evidence every callback posts for the
    ranking of causes, and the cached gradient statistics."""

    log: ConvergenceLog
    evidence: Evidence = field(default_factory=Evidence)
    consequence: ConsequenceJudge = field(default_factory=ConsequenceJudge)
    nonfinite: NonfiniteEvents = field(default_factory=NonfiniteEvents)  # one non-finite event, one diagnosis
    # Callables ``source(trainer)`` that post what a callback holds now on the evidence board,
    # called before a warning is ranked (a finding of another callback may come first in a step).
    evidence_sources: list = field(default_factory=list)
    layout_written: bool = False
    finished: bool = False
    report_written_by: set[str] = field(default_factory=set)
    said: set[str] = field(default_factory=set)  # one-time notices already given in this fit
    # While a learning-rate range test runs (``callbacks._range_test``): its steps are probes
    # that are undone afterwards, so the callbacks that judge the run pause.
    probing: bool = False
    guards: dict = field(default_factory=dict)  # owner -> its guarded remedy (``callbacks._guard``)
    lr_remedy_pending: bool = False  # PlateauAdvisor's last LR remedy waits for its verdict
    lr_cut_step: int | None = None  # PlateauAdvisor's last LR cut: evidence from before it is stale
    # Owner -> ``revive(trainer, step)``: remedies that go with PlateauAdvisor's cut of a learning
    # rate named too high, taken right after it and judged with it (DeadNeuronTracker's ReDo of
    # units that rate killed); each owner sets or drops its own at every window.
    revive_with_cut: dict = field(default_factory=dict)
    # PlateauAdvisor's noise of a difference of two smoothed losses at its last window
    # (``rules.intervention_check.difference_noise``): a guard opened now keeps it for its verdict.
    loss_noise: float | None = None
    # An acting PlateauAdvisor answers a divergence with a rollback; GradientNormMonitor then hands
    # it runs of non-finite gradients that came after finite ones (``recovery_request``: plain
    # JSON for the report) instead of stopping the run.
    recovers_divergence: bool = False
    recovery_request: dict | None = None
    _gradient_pass: _GradientPass | None = None
    _parameters: dict[int, tuple[list, list[str]]] = field(default_factory=dict)
    _layouts: dict[int, ShardLayout | None] = field(default_factory=dict)  # per optimizer; None: not sharded
    _lr_controls: dict[int, LRControl] = field(default_factory=dict)

    def lr_control(self, optimizer: torch.optim.Optimizer) -> LRControl:
        """The one LR control of ``optimizer`` that every callback of this fit shares."""
        control = self._lr_controls.get(id(optimizer))
        if control is None or control.optimizer is not optimizer:
            control = self._lr_controls[id(optimizer)] = LRControl(optimizer)
        return control

    def detach_lr_controls(self) -> None:
        """Remove every optimizer hook of ours (end of fit, or a fault)."""
        for control in self._lr_controls.values():
            control.detach()
        self._lr_controls.clear()

    def parameters(self, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> tuple[list, list[str]]:
        """The optimizer's parameters that ``pl_module`` names, in param-group order, and names.

        Every callback takes its parameters from here, so that they all index the shared
        gradient statistics the same way.
        """
        cached = self._parameters.get(id(optimizer))
        if cached is None:
            names = {id(p): n for n, p in pl_module.named_parameters()}
            params = [p for group in optimizer.param_groups for p in group["params"] if id(p) in names]
            cached = self._parameters[id(optimizer)] = (params, [names[id(p)] for p in params])
        return cached

    def shard_layout(self, trainer: Trainer, pl_module: LightningModule,
                     optimizer: torch.optim.Optimizer) -> ShardLayout | None:
        """How ``optimizer``'s parameters are sharded (DTensors under FSDP2 or tensor
        parallelism), or ``None`` when every rank holds them whole (one process, DDP)."""
        if id(optimizer) not in self._layouts:
            params, _ = self.parameters(pl_module, optimizer)
            self._layouts[id(optimizer)] = ShardLayout.of(trainer, params)
        return self._layouts[id(optimizer)]

    def gradient_statistics(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer,
        backend: str, full: bool,
    ) -> tuple[Tensor | list[float], Tensor | None]:
        """Per-parameter sums of squares (and, with ``full``, ``[sumsq, max, non-finite flag]``).

        Computed once per optimizer step however many callbacks ask, and always from the
        gradients as they were when the first callback asked (before any clipping or skip). On the
        host path (dense float32 gradients on the CPU, no sharding) the sums of squares come as a
        list of floats, the same values (:func:`~lightning_convergence.stats.host_sum_of_squares`).

        Under sharding (DTensor parameters) the values are global and the same on every rank: each
        rank measures its local shards, and ONE all_reduce(SUM) per computed pass merges them
        (``full`` packs the non-finite flags and every rank's maxima into that same buffer).
        Whether a pass is computed depends only on the step and the callbacks' settings, which are
        the same on every rank, so every rank reaches the collective. Without sharding there is
        no collective: under DDP the gradients are already the same on every rank.
        """
        key = (id(optimizer), trainer.global_step, backend)
        cached = self._gradient_pass
        if cached is None or cached.key != key:
            cached = self._gradient_pass = _GradientPass(key)
        elif cached.sumsq is not None and (cached.full is not None or not full):
            return cached.sumsq, cached.full  # another callback asked first this step
        params, _ = self.parameters(pl_module, optimizer)
        layout = self.shard_layout(trainer, pl_module, optimizer)
        grads = [p.grad for p in params] if layout is None else local_gradients(params)
        if full and cached.full is None:
            cached.full = tensor_stats(grads, backend=backend, count_nonfinite=False)
            if layout is not None:
                cached.full = layout.tensor_stats(cached.full)  # collective: one all_reduce(SUM)
            cached.sumsq = cached.full[:, 0]
        elif cached.sumsq is None:
            # On the host path (dense float32 gradients on the CPU) the floats themselves: their
            # readers would read a tensor back at once.
            cached.sumsq = host_sum_of_squares(grads, backend) if layout is None else None
            if cached.sumsq is None:
                cached.sumsq = sum_of_squares(grads, backend=backend)
            if layout is not None:
                cached.sumsq = layout.sum_of_squares(cached.sumsq)  # collective: one all_reduce(SUM)
        return cached.sumsq, cached.full


_CONTEXTS: "weakref.WeakKeyDictionary[Trainer, RunContext]" = weakref.WeakKeyDictionary()


def run_context(trainer: Trainer, window_steps: int = 500) -> RunContext:
    """The context of ``trainer``'s current fit, created on first use."""
    context = _CONTEXTS.get(trainer)
    if context is None:
        context = _CONTEXTS[trainer] = RunContext(ConvergenceLog(window_steps=window_steps))
    return context


def start_run_context(trainer: Trainer, window_steps: int = 500) -> RunContext:
    """At ``setup("fit")``: a fresh context if the last fit of ``trainer`` has ended."""
    context = _CONTEXTS.get(trainer)
    if context is not None and context.finished:
        del _CONTEXTS[trainer]
    return run_context(trainer, window_steps)


def finish_run_context(trainer: Trainer) -> None:
    """At ``teardown("fit")``: mark the fit as ended. The context stays readable until the next
    fit starts (every callback's teardown still reads its records from it) or the Trainer goes."""
    context = _CONTEXTS.get(trainer)
    if context is not None:
        context.finished = True
        context.detach_lr_controls()
        context._gradient_pass = None  # holds gradient statistics tensors
        context.guards.clear()  # snapshots of remedies still waiting for a verdict
        context._parameters.clear()  # holds references to the model's parameters
        context._layouts.clear()
