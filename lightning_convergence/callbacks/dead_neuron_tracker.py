"""DeadNeuronTracker: dead, dormant and saturated units per activation, and ReDo when asked.

Forward hooks on activation modules feed per-unit statistics, declared in one device window, on
sampled training batches (no host read). Every logging step the window is brought to the host in
one transfer (reduced over ranks first under DDP), judged by :class:`UnitHealthRule`, logged,
acted on and reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_convergence.callbacks._guard import cuts_lr_when_named_too_high, judged, may_act, open_guard
from lightning_convergence.callbacks._unit_sites import UnitSites
from lightning_convergence.callbacks._trainer_reads import over_ranks
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.remedies.redo import reinit_units_
from lightning_convergence.remedies.unit_wiring import UnitWiring
from lightning_convergence.stats.sharding import is_dtensor

# Why ReDo stays off under sharding: a unit's incoming rows and outgoing columns would be
# re-initialised on each rank's shard of the producer and consumer, with their optimizer state.
_SHARDED_REDO = ("the parameters are sharded DTensors (FSDP2 `fully_shard` or tensor parallelism), and ReDo "
                 "does not re-initialise sharded units yet; dead units are still measured over every rank "
                 "and reported")
# Why ReDo stays off under torch.compile: the wiring is read from the autograd graph of one probed
# forward, and a compiled region is one opaque node of that graph (the probe's own hooks would
# also recompile it and break its graph).
_COMPILED_REDO = ("the model runs through torch.compile, whose compiled regions hide the autograd graph "
                  "that ReDo's wiring check reads; dead units are still measured and reported")
from lightning_convergence.recorder.tensorboard import log_scalars, write_histograms
from lightning_convergence.rules.remedy_choice import lr_named_too_high, remedy_for
from lightning_convergence.rules.unit_health import SiteWindow, UnitHealthRule, UnitThresholds, UnitVerdict
from lightning_convergence.validation import check_positive_float, check_positive_int


class DeadNeuronTracker(ConvergenceCallback):
    """Tracks dead, dormant and saturated units per activation, and revives dead ones (ReDo).

    A unit is a channel of a convolution's output or a feature of a linear or sequence output (the last
    dimension; for 3-d outputs the layer that ran before the activation decides, and ``unit_dims`` overrides the
    rule). Over each window of sampled training batches a unit of a ReLU-family activation is *dead* when it
    never gave a positive output; a unit of any activation is *dormant* when its mean |output| is at most
    ``dormant_tau`` times the layer's average (ReDo); a sigmoid/tanh layer's *saturation* is the share of its
    outputs within ``saturation_eps`` of the flat ends. ``convergence/dead_fraction/<layer>`` is each window's
    own count; findings and revivals count the units dead in two windows in a row, so that a unit that is merely
    rarely active is not taken for dead. An activation module called several times per forward is tracked once
    per call (``act``, ``act#2``, ...). ``F.relu`` inside ``forward`` cannot be hooked: use ``nn.ReLU`` modules
    or name the module whose output to track in ``include``.

    With ``auto_remediate=True`` dead units of a layer reported at warning level or above (25% of the layer by
    default; a few dead units are normal in a healthy layer; when a callback judges the loss, below 75% only once
    the loss showed harm, from 75% at once) get fresh incoming weights from the layer's default
    initialisation, zero outgoing weights (the function is unchanged at that step) and reset optimizer state for
    those rows and columns. Only units whose wiring is certain are touched: the producing Linear/Conv (through
    BatchNorm or dropout at most) and the consuming Linear/Conv (through dropout, pooling or a flatten at most),
    with no other reader of the tensors in between, checked on the autograd graph of the first sampled step.
    Other sites are skipped, and the reason is given.

    Under ``torch.compile`` (a submodule compiled in ``configure_model``, or the whole module) the
    hooks stay registered for the whole fit and hand each activation to one opaque op that the
    compiled graph keeps (see ``_compiled_sites``): no graph break, no recompile, and training is
    bit-identical. Sites keep the names the eager model has (without ``_orig_mod``); a 3-d output's
    unit dimension is the last one; ReDo is refused, with the reason.

    Args:
        sample_every_n_steps: hook the forward of one optimizer step in this many.
        log_every_n_steps: logging and evaluation cadence; ``None`` uses the Trainer's.
        min_batches: a window is judged only once it holds this many sampled batches.
        dormant_tau: ReDo's threshold on normalised mean |activation|.
        saturation_eps: distance from a flat end that counts as saturated.
        thresholds: fractions that make a finding (see :class:`UnitThresholds`).
        unit_dims: per module name, the unit dimension of its output.
        include: names of further modules to treat as ReLU-like activations.
        exclude: names of activation modules to leave alone.
        histogram_every_n_steps: cadence of per-layer histograms of unit activity (TensorBoard).
        auto_remediate: revive dead units (ReDo) in reported layers, under the suite's do-no-harm
            guard, and not when the revival cannot pay off: fewer than two of this tracker's
            windows left in the fit, or a top cause in the user's code or data. Units whose top
            cause is a learning rate too high (named by the update ratios) die again at that
            rate: while PlateauAdvisor acts they are revived right after its LR cut, at the same
            step, as one remedy judged by the cut's verdict and undone with it (one window left
            suffices; not in a run with an ``overfitting`` warning, nor after a rollback to
            weights from before the window that found them dead).
        redo_on: revive ``"dead"`` units, or all ``"dormant"`` ones as in the paper.
        redo_cooldown_steps: optimizer steps before the same layer may be revived again.
        seed: seed of the private generator that draws the new weights.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.

    Raises:
        ValueError: an argument is out of range.
        TypeError: an argument has the wrong type.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[DeadNeuronTracker(sample_every_n_steps=5)], logger=False)

    References:
        Sokar, Agarwal, Castro, Evci. "The Dormant Neuron Phenomenon in Deep Reinforcement
        Learning", ICML 2023.
    """

    state_key_fields = ("dormant_tau", "redo_on")

    def __init__(
        self,
        sample_every_n_steps: int = 10,
        log_every_n_steps: int | None = None,
        min_batches: int = 4,
        dormant_tau: float = 0.1,
        saturation_eps: float = 0.01,
        thresholds: UnitThresholds | None = None,
        unit_dims: dict[str, int] | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        histogram_every_n_steps: int | None = 500,
        auto_remediate: bool = False,
        redo_on: Literal["dead", "dormant"] = "dead",
        redo_cooldown_steps: int = 200,
        seed: int = 0,
        report_window_steps: int = 500,
    ) -> None:
        super().__init__(auto_remediate=auto_remediate, report_window_steps=report_window_steps,
                         log_every_n_steps=log_every_n_steps)
        check_positive_int("sample_every_n_steps", sample_every_n_steps)
        check_positive_int("min_batches", min_batches)
        check_positive_float("dormant_tau", dormant_tau)
        if dormant_tau >= 1:
            raise ValueError(f"`dormant_tau` must be in (0, 1), got {dormant_tau!r}.")
        if thresholds is not None and not isinstance(thresholds, UnitThresholds):
            raise TypeError(f"`thresholds` must be a UnitThresholds, got {thresholds!r}.")
        self._sites = UnitSites(saturation_eps, unit_dims, include, exclude)  # checks these four
        check_positive_int("histogram_every_n_steps", histogram_every_n_steps, allow_none=True)
        if redo_on not in ("dead", "dormant"):
            raise ValueError(f"`redo_on` must be 'dead' or 'dormant', got {redo_on!r}.")
        check_positive_int("redo_cooldown_steps", redo_cooldown_steps)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int, got {seed!r}.")
        self.sample_every_n_steps = sample_every_n_steps
        self.min_batches = min_batches
        self.dormant_tau = float(dormant_tau)
        self.saturation_eps = self._sites.eps
        self.thresholds = thresholds or UnitThresholds()
        self.unit_dims = self._sites.unit_dims
        self.include = self._sites.include
        self.exclude = self._sites.exclude
        self.histogram_every_n_steps = histogram_every_n_steps
        self.redo_on = redo_on
        self.redo_cooldown_steps = redo_cooldown_steps
        self.seed = seed
        self._rule = UnitHealthRule(self.thresholds, self.dormant_tau, self.redo_on, self.redo_cooldown_steps)
        self._last_evaluated = -1
        self._sharded = False  # DTensor parameters (set when training starts): no ReDo

    # ----------------------------------------------------------------- hooks on the model

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._sites.attach(pl_module)  # replaces any hooks of an earlier fit; warns if there are none
        # The same on every rank: whether the model's parameters are DTensors (FSDP2, TP).
        self._sharded = any(is_dtensor(p) for p in pl_module.parameters())
        self._sites.to(pl_module.device)  # a window restored from a checkpoint is on the CPU

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        sampled = (self._sites.attached and trainer.global_step % self.sample_every_n_steps == 0
                   and not self.probing(trainer))
        self._sites.start_batch(sampled)
        if sampled and self._sites.wiring is None and not self._sites.probe.attached and not self._sites.compiled:
            self._sites.probe.attach(pl_module)  # one forward, to learn the wiring (removed at backward)

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        # Compiled: no probe ran; the sites are known after the first sampled forward.
        compiled_first = self._sites.compiled and self._sites.wiring is None and bool(self._sites.sites)
        if self._sites.probe.attached or compiled_first:
            refuse = _SHARDED_REDO if self._sharded else _COMPILED_REDO if self._sites.compiled else None
            self._sites.resolve_wiring(loss, say_skipped=self.auto_remediate, refuse=refuse)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sites.end_batch()  # warns about sites that could not be tracked
        step = trainer.global_step
        if self.probing(trainer) or step == self._last_evaluated or step % self.logging_cadence(trainer) != 0:
            return
        self._sites.warn_if_nothing_ran()
        if self._sites.sites and self._sites.batches >= self.min_batches:
            span, self._last_evaluated = step - max(self._last_evaluated, 0), step
            self._evaluate(trainer, step - 1, span)

    # ----------------------------------------------------------------- one window

    def _evaluate(self, trainer: Trainer, last_step: int, span: int) -> None:
        # Every rank reaches here at the same step (sampling and windows are counted in optimizer
        # steps). One collective per reduction kind (Lightning's strategies take "sum", "max" and
        # "min" as ReduceOp names): sums add up, a peak is the max over ranks, so a unit is alive
        # if it fired on any rank and dead only when dead on every rank. Then one host transfer.
        reduce = None if trainer.world_size <= 1 else lambda t, op: over_ranks(trainer, t, op)
        sites = self._sites.read(reduce)
        # ReDo acts under a guard: judged by the loss over the next window, undone (and not
        # tried again) if it hurt; one at a time. And only with two windows of this ``span`` left
        # in the fit: revived units need time to learn, and a revival near the end cannot pay off
        # (on the calibration sweep, revivals with fewer than 100 steps left helped 3 runs and
        # harmed 3; earlier ones helped 5 and harmed none).
        left = trainer.estimated_stepping_batches - (last_step + 1)
        may = self.is_acting(trainer) and may_act(self.context(trainer), trainer, self.state_key, "dead_units")
        acting = may and left >= 2 * span
        # A partly dead layer waits until the loss showed harm (its finding confirmed as a warning
        # by the consequence judge, a window later): revived while the loss keeps improving, it
        # made healthy runs worse on the calibration sweep. A layer dead at 75% or more is revived at once.
        harm_seen = None
        if judged(trainer):
            harm_seen = {d.layer for d in self.context(trainer).log.diagnoses
                         if d.kind == "dead_units" and d.severity != "info"}
        # Judged without acting: the revivals below are counted as they are made (a layer held
        # back for a cut that never comes keeps its dead units and no cooldown).
        verdict = self._rule.judge(sites, last_step, act=False, harm_seen=harm_seen)
        self._log(trainer, sites, verdict, last_step)
        findings = [self.rank(trainer, f) for f in verdict.findings]
        # Units killed by a bug in the code (gradients never zeroed, ...) die again: not revived.
        held = {f.layer: f.causes[0].cause for f in findings if f.kind == "dead_units" and remedy_for(f.causes) == "none"}
        # Units killed by a learning rate too high, named by the update ratios, die again at that
        # rate: they are revived together with the LR cut that answers them (PlateauAdvisor's,
        # when one acts), as one remedy judged by the cut's verdict and undone with it. A rollback
        # before the cut into this window returns to weights in which these units were dead
        # already, and at the lower rate they stay dead: the mlp/adamw/0.1 run of the calibration
        # sweep ended 1.2x behind its observed twin with the cut alone (a rollback to before the
        # window is left alone: ``_revive_with_cut``). The pair
        # needs one window for its verdict and one to learn, the span of one. The offer stands
        # until this tracker's next window (PlateauAdvisor may run first in a step and cut a
        # window later, on this finding).
        context = self.context(trainer)
        context.revive_with_cut.pop(self.state_key, None)
        if cuts_lr_when_named_too_high(trainer):
            held.update({f.layer: "learning_rate_too_high" for f in findings
                         if f.kind == "dead_units" and lr_named_too_high(f.causes, measured_after=context.lr_cut_step)})
            first_steps = {layer.layer: layer.first_step for layer in verdict.layers}
            with_cut = {layer: (verdict.candidates[layer], first_steps[layer]) for layer, cause in held.items()
                        if cause == "learning_rate_too_high" and layer in verdict.candidates}
            # Revived units add capacity back: not in a run that overfits (its validation loss rose
            # while the training loss fell), where the lost capacity is not what hurts.
            overfits = any(d.kind == "overfitting" and d.severity != "info" for d in context.log.diagnoses)
            if may and left >= span and with_cut and not overfits:
                context.revive_with_cut[self.state_key] = partial(self._revive_with_cut, with_cut, last_step, span)
        for finding in findings:
            self.record(trainer, finding, step=last_step)
        if acting:
            for layer, units in verdict.unwired.items():
                self._sites.say_left_alone(layer, units)
        qualifying = verdict.candidates if acting else {}
        revive = {layer: units for layer, units in qualifying.items() if layer not in held}
        for layer in set(qualifying) - set(revive):
            if held[layer] == "learning_rate_too_high":
                self.warn(f"the dead units of `{layer}` are not revived on their own: their top cause is a learning "
                          f"rate too high, at which they would die again; they are revived with PlateauAdvisor's cut "
                          f"of the rate, when it makes one.")
            else:
                self.warn(f"the dead units of `{layer}` are not revived: their top cause, {held[layer]}, is in the "
                          f"code or data, and they would die again.")
        if revive:
            open_guard(self.context(trainer), trainer, self.state_key, self.source, "dead_units", last_step)
            for layer, units in revive.items():
                self._rule.count_revived(layer, units, last_step)
                self._revive(trainer, layer, units, last_step)
        self._sites.reset()

    def _log(self, trainer: Trainer, sites: list[SiteWindow], verdict: UnitVerdict, last_step: int) -> None:
        metrics, histograms = {}, {}
        # The histograms' tensors are made only in a window that writes them.
        with_histograms = bool(self.histogram_every_n_steps) and (
            (last_step + 1) % self.histogram_every_n_steps < self.logging_cadence(trainer))
        for site, layer in zip(sites, verdict.layers):
            if layer.window_dead is not None:
                metrics[f"convergence/dead_fraction/{layer.layer}"] = layer.window_dead_fraction
            metrics[f"convergence/dormant_fraction/{layer.layer}"] = layer.dormant_fraction
            if layer.saturation is not None:
                metrics[f"convergence/saturation/{layer.layer}"] = layer.saturation
            mean = sum(site.abs_sum) / len(site.abs_sum) if site.abs_sum and with_histograms else 0.0
            if mean > 0:
                histograms[f"convergence/unit_activity/{layer.layer}"] = torch.tensor(site.abs_sum) / mean
        log_scalars(trainer, metrics, last_step)
        if with_histograms:
            write_histograms(trainer, histograms, last_step)

    # ----------------------------------------------------------------- ReDo

    def _revive_with_cut(self, found: dict[str, tuple[list[int], int]], last_step: int, span: int,
                         trainer: Trainer, step: int, restored_to: int | None = None) -> int:
        """Called by the LR cut that answers a learning rate too high, at ``step``, right after it
        (after its rollback to ``restored_to``, if any): revive the units this callback found
        dead under that rate, per layer ``(units, first step of the evidence)``, in its window of
        ``span`` steps that ended at ``last_step``. A layer whose evidence starts after the step
        rolled back to is left as it is: in the weights put back, its units may still have been
        alive. Returns the steps the pair needs before its verdict: one such window, for the
        revived units to learn (0 when nothing was revived)."""
        revived = False
        for layer, (units, first_step) in found.items():
            if step < last_step or (restored_to is not None and restored_to < first_step):
                continue
            self._rule.count_revived(layer, units, last_step)
            self._revive(trainer, layer, units, step, with_lr_cut=True)
            revived = True
        return span if revived else 0

    def _revive(self, trainer: Trainer, layer: str, units: list[int], step: int, with_lr_cut: bool = False) -> None:
        wiring = (self._sites.wiring or {})[layer]
        assert isinstance(wiring, UnitWiring)  # the rule revives only sites with a producer
        # Seeded by the step and the site, identically on every DDP rank and after a resume.
        index = list(self._sites.sites).index(layer)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + index)
        revived = reinit_units_(wiring, units, trainer.optimizers, generator)
        self.record_intervention(trainer, "reinit_units", step, {
            "layer": layer, "units": revived, "of": self._sites.sites[layer].accumulator.units,
            "producer": wiring.producer_name, "consumer": wiring.consumer_name, "criterion": self.redo_on,
            **({"with": "lr_cut", "why": "killed by a learning rate too high: revived with its cut, judged and "
                                        "undone with it"} if with_lr_cut else {}),
        })

    # ----------------------------------------------------------------- end of fit and state

    @override
    def _remove_hooks(self) -> None:
        self._sites.detach()

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["rule"] = self._rule.state_dict()
        state["sites"] = self._sites.state_dict()
        state["last_evaluated"] = self._last_evaluated
        return state

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        # An older checkpoint kept the rule's windows and revivals at the top level: the rule
        # takes the keys it knows from both, its own part first.
        self._rule.load_state_dict({**state_dict, **state_dict.get("rule", {})})
        self._sites.load_state_dict(state_dict.get("sites", {}), torch.device("cpu"))
        self._last_evaluated = int(state_dict.get("last_evaluated", -1))
