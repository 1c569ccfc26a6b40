"""DeadNeuronTracker: dead, dormant and saturated units per activation, and ReDo when asked.

Forward hooks on activation modules feed per-unit accumulators on the device on sampled
training batches (no host read). Every logging step the window is brought to the host in one
transfer (one collective first under DDP), logged, judged, and then reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_convergence.callbacks._unit_sites import Site, UnitSites
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.remedies.redo import reinit_units_
from lightning_convergence.remedies.unit_wiring import UnitWiring
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.recorder.tensorboard import log_scalars, write_histograms
from lightning_convergence.rules.unit_health import LayerUnits, UnitHealthRule, UnitThresholds
from lightning_convergence.stats.activations import ACTIVATION_KINDS, CAN_DIE, CAN_SATURATE
from lightning_convergence.validation import check_positive_float, check_positive_int

NOTHING_TO_TRACK = (
    "DeadNeuronTracker: nothing to track: the model has no activation modules ({known}). "
    "Activations called as functions inside forward (F.relu, torch.tanh, x.relu()) cannot be hooked; "
    "use module activations (nn.ReLU()), or name the modules whose outputs should be tracked with `include=[...]`."
)


class DeadNeuronTracker(ConvergenceCallback):
    """Tracks dead, dormant and saturated units per activation, and revives dead ones (ReDo).

    A unit is a channel of a convolution's output or a feature of a linear or sequence output
    (the last dimension; for 3-d outputs the layer that ran before the activation decides, and
    ``unit_dims`` overrides the rule). Over each window of sampled training batches a unit of a
    ReLU-family activation is *dead* when it never gave a positive output; a unit of any
    activation is *dormant* when its mean |output| is at most ``dormant_tau`` times the layer's
    average (ReDo); a sigmoid/tanh layer's *saturation* is the share of its outputs within
    ``saturation_eps`` of the flat ends. ``convergence/dead_fraction/<layer>`` is each window's
    own count; findings and revivals count the units dead in two windows in a row, so that a unit
    that is merely rarely active is not taken for dead. An activation module called several times per forward
    is tracked once per call (``act``, ``act#2``, ...). ``F.relu`` inside ``forward`` cannot be
    hooked: use ``nn.ReLU`` modules or name the module whose output to track in ``include``.

    With ``auto_remediate=True`` dead units of a layer reported at warning level or above (25%
    of the layer by default; a few dead units are normal in a healthy layer) get fresh incoming
    weights from the layer's default initialisation, zero outgoing weights (the function is
    unchanged at that step) and reset optimizer state for those rows and columns. Only units
    whose wiring is certain are touched: the producing Linear/Conv (through BatchNorm or dropout
    at most) and the consuming Linear/Conv (through dropout, pooling or a flatten at most), with
    no other reader of the tensors in between, checked on the autograd graph of the first
    sampled step. Other sites are skipped, and the reason is given.

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
        auto_remediate: revive dead units (ReDo) in reported layers.
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
        super().__init__(auto_remediate=auto_remediate, report_window_steps=report_window_steps)
        check_positive_int("sample_every_n_steps", sample_every_n_steps)
        check_positive_int("log_every_n_steps", log_every_n_steps, allow_none=True)
        check_positive_int("min_batches", min_batches)
        check_positive_float("dormant_tau", dormant_tau)
        if dormant_tau >= 1:
            raise ValueError(f"`dormant_tau` must be in (0, 1), got {dormant_tau!r}.")
        check_positive_float("saturation_eps", saturation_eps)
        if saturation_eps >= 0.5:
            raise ValueError(f"`saturation_eps` must be in (0, 0.5), got {saturation_eps!r}.")
        if thresholds is not None and not isinstance(thresholds, UnitThresholds):
            raise TypeError(f"`thresholds` must be a UnitThresholds, got {thresholds!r}.")
        unit_dims = dict(unit_dims or {})
        for name, dim in unit_dims.items():
            if isinstance(dim, bool) or not isinstance(dim, int):
                raise TypeError(f"`unit_dims` values must be ints, got {dim!r} for {name!r}.")
        for arg, names in (("include", include), ("exclude", exclude)):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"`{arg}` must be a sequence of module names, got {names!r}.")
        check_positive_int("histogram_every_n_steps", histogram_every_n_steps, allow_none=True)
        if redo_on not in ("dead", "dormant"):
            raise ValueError(f"`redo_on` must be 'dead' or 'dormant', got {redo_on!r}.")
        check_positive_int("redo_cooldown_steps", redo_cooldown_steps)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int, got {seed!r}.")
        self.sample_every_n_steps = sample_every_n_steps
        self.log_every_n_steps = log_every_n_steps
        self.min_batches = min_batches
        self.dormant_tau = float(dormant_tau)
        self.saturation_eps = float(saturation_eps)
        self.thresholds = thresholds or UnitThresholds()
        self.unit_dims = unit_dims
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.histogram_every_n_steps = histogram_every_n_steps
        self.redo_on = redo_on
        self.redo_cooldown_steps = redo_cooldown_steps
        self.seed = seed
        self._sites = UnitSites(self.saturation_eps, self.unit_dims, self.include, self.exclude)
        self._rule = UnitHealthRule(self.thresholds)
        self._wiring: dict[str, UnitWiring | str] | None = None
        self._last_revival: dict[str, int] = {}
        self._window_start = 0
        self._previous_start = 0
        self._previous_dead: dict[str, list[bool]] = {}  # per site, the dead units of the last window
        self._previous_batches: dict[str, int] = {}  # and how many sampled batches that window held
        self._last_evaluated = -1
        self._reported: set[str] = set()
        self._warned_nothing_ran = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(dormant_tau=self.dormant_tau, redo_on=self.redo_on)

    # ----------------------------------------------------------------- hooks on the model

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        hooked = self._sites.attach(pl_module)  # replaces any hooks of an earlier fit
        self._sites.to(pl_module.device)  # accumulators restored from a checkpoint are on the CPU
        if hooked == 0:
            known = ", ".join(cls.__name__ for cls in ACTIVATION_KINDS)
            rank_zero_warn(NOTHING_TO_TRACK.format(known=known), category=ConvergenceWarning)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        sampled = self._sites.attached and trainer.global_step % self.sample_every_n_steps == 0
        self._sites.start_batch(sampled)
        if sampled and self._wiring is None and not self._sites.probe.attached:
            self._sites.probe.attach(pl_module)  # one forward, to learn the wiring (removed at backward)

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        probe = self._sites.probe
        if not probe.attached:
            return
        probe.detach()
        # Reads the autograd graph only; nothing in training changes.
        self._wiring = probe.resolve(loss, self._sites.site_calls(), self._sites.unit_dims_by_site())
        probe.clear()
        if self.auto_remediate:
            for name, wiring in self._wiring.items():
                if isinstance(wiring, str):
                    rank_zero_info(f"DeadNeuronTracker: units of `{name}` will not be re-initialised: {wiring}.")

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sites.sampling = False
        for problem in self._sites.problems:
            rank_zero_warn(f"DeadNeuronTracker: not tracked: {problem}.", category=ConvergenceWarning)
        self._sites.problems.clear()
        step = trainer.global_step
        if step == self._last_evaluated or step % self.logging_cadence(trainer) != 0:
            return
        if not self._sites.sites:
            self._warn_nothing_ran()
            return
        if min(s.accumulator.batches for s in self._sites.sites.values()) < self.min_batches:
            return
        self._last_evaluated = step
        self._evaluate(trainer, step - 1)

    def _warn_nothing_ran(self) -> None:
        hooked = len(self._sites._handles)
        if hooked and not self._warned_nothing_ran:
            self._warned_nothing_ran = True
            rank_zero_warn(f"DeadNeuronTracker: none of the {hooked} activation modules ran in a training forward "
                           "so far: they may be defined but unused, with forward calling F.relu and the like, which "
                           "cannot be hooked. Name the modules whose outputs to track with `include=[...]`.",
                           category=ConvergenceWarning)

    # ----------------------------------------------------------------- one window

    def _read(self, trainer: Trainer) -> list[tuple[Site, list[float], list[float], list[float], float]]:
        """Every site's ``[fired, |x| sum, saturated]`` per unit and values per unit, summed over
        DDP ranks in one collective (every rank reaches here at the same step: sampling and
        windows are counted in optimizer steps), then read on the host in one transfer."""
        sites = list(self._sites.sites.values())
        parts = []
        for site in sites:
            activity = site.accumulator.activity()
            parts += [(activity.peak > 0).float(), activity.abs_sum, activity.saturated,
                      activity.abs_sum.new_tensor([activity.values_per_unit])]
        packed = torch.cat(parts)
        if trainer.world_size > 1:
            # A unit counts as alive if it fired on any rank: dead only when dead on every rank.
            packed = trainer.strategy.reduce(packed, reduce_op="sum")
        values = packed.tolist()
        out, at = [], 0
        for site in sites:
            units = site.accumulator.units or 0
            fired, abs_sum, saturated = (values[at + i * units: at + (i + 1) * units] for i in range(3))
            out.append((site, fired, abs_sum, saturated, values[at + 3 * units]))
            at += 3 * units + 1
        return out

    def _evaluate(self, trainer: Trainer, last_step: int) -> None:
        windows, metrics, histograms = [], {}, {}
        for site, fired, abs_sum, saturated, count in self._read(trainer):
            kind = site.accumulator.kind
            units = len(abs_sum)
            mean = sum(abs_sum) / units if units else 0.0
            dormant = [mean <= 0 or a / mean <= self.dormant_tau for a in abs_sum]
            raw_dead = [f == 0 for f in fired] if kind in CAN_DIE else None
            # Judged on the units dead in this window and the one before: a unit that is merely
            # rarely active is seldom silent in both, a dead one is.
            previous = self._previous_dead.get(site.name)
            dead, first_step, batches = raw_dead, self._window_start, site.accumulator.batches
            if raw_dead is not None and previous is not None and len(previous) == len(raw_dead):
                dead, first_step = [a and b for a, b in zip(raw_dead, previous)], self._previous_start
                batches += self._previous_batches.get(site.name, 0)
            if raw_dead is not None:
                self._previous_dead[site.name] = raw_dead
                self._previous_batches[site.name] = site.accumulator.batches
            saturation = sum(saturated) / (count * units) if kind in CAN_SATURATE and count and units else None
            window = LayerUnits(site.name, site.activation, units, None if dead is None else sum(dead), sum(dormant),
                                saturation, batches, first_step, last_step)
            self._add_wiring_evidence(window, dead)
            windows.append((window, dead, dormant))
            if raw_dead is not None:
                metrics[f"convergence/dead_fraction/{site.name}"] = sum(raw_dead) / units if units else 0.0
            metrics[f"convergence/dormant_fraction/{site.name}"] = window.dormant_fraction
            if saturation is not None:
                metrics[f"convergence/saturation/{site.name}"] = saturation
            if mean > 0:
                histograms[f"convergence/unit_activity/{site.name}"] = torch.tensor(abs_sum) / mean
        log_scalars(trainer, metrics, last_step)
        if self.histogram_every_n_steps and (last_step + 1) % self.histogram_every_n_steps < self.logging_cadence(trainer):
            write_histograms(trainer, histograms, last_step)
        reported = set()
        for finding in self._rule.evaluate([w for w, _, _ in windows]):
            self.record(trainer, finding, step=last_step)
            if finding.kind == "dead_units" and finding.severity != "info":
                # A few dead units (info) are normal in a healthy ReLU layer: leave them be.
                reported.add(finding.layer)
        if self.is_acting(trainer):
            for window, dead, dormant in windows:
                if window.layer in reported or (self.redo_on == "dormant" and window.dormant):
                    self._revive(trainer, window, dormant if self.redo_on == "dormant" else dead, last_step)
        for site in self._sites.sites.values():
            site.accumulator.reset()
        self._previous_start, self._window_start = self._window_start, last_step + 1

    def _add_wiring_evidence(self, window: LayerUnits, dead: list[bool] | None) -> None:
        wiring = (self._wiring or {}).get(window.layer)
        if isinstance(wiring, str):
            window.evidence["redo_skipped"] = wiring
            return
        if wiring is None:
            return
        window.producer = wiring.producer_name
        bias = getattr(wiring.producer, "bias", None)
        if dead is None or bias is None or not any(dead) or len(dead) != bias.numel():
            return
        values = bias.detach().float().cpu().tolist()
        dead_b = [b for b, d in zip(values, dead) if d]
        live_b = [b for b, d in zip(values, dead) if not d]
        window.dead_bias_mean = sum(dead_b) / len(dead_b)
        window.live_bias_mean = sum(live_b) / len(live_b) if live_b else None

    # ----------------------------------------------------------------- ReDo

    def _revive(self, trainer: Trainer, window: LayerUnits, mask: list[bool] | None, step: int) -> None:
        units = [i for i, flag in enumerate(mask or []) if flag]
        last = self._last_revival.get(window.layer)
        if not units or (last is not None and step - last < self.redo_cooldown_steps):
            return
        wiring = (self._wiring or {}).get(window.layer)
        if not isinstance(wiring, UnitWiring):
            if window.layer not in self._reported:
                self._reported.add(window.layer)
                reason = wiring or "its wiring was not recorded"
                rank_zero_info(f"DeadNeuronTracker: {len(units)} dead units in `{window.layer}` left as they are: {reason}.")
            return
        # Seeded by the step and the site, identically on every DDP rank and after a resume.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + list(self._sites.sites).index(window.layer))
        revived = reinit_units_(wiring, units, trainer.optimizers, generator)
        self._last_revival[window.layer] = step
        previous = self._previous_dead.get(window.layer)
        if previous is not None:  # revived units start afresh: not dead in the window before
            fresh = set(units)
            self._previous_dead[window.layer] = [d and i not in fresh for i, d in enumerate(previous)]
        self.record_intervention(trainer, "reinit_units", step, {
            "layer": window.layer, "units": revived, "of": window.units, "producer": wiring.producer_name,
            "consumer": wiring.consumer_name, "criterion": self.redo_on,
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
        state["last_revival"] = dict(self._last_revival)
        state["window_start"] = self._window_start
        state["previous_start"] = self._previous_start
        state["previous_dead"] = {k: list(v) for k, v in self._previous_dead.items()}
        state["previous_batches"] = dict(self._previous_batches)
        state["last_evaluated"] = self._last_evaluated
        return state

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._rule.load_state_dict(state_dict.get("rule", {}))
        self._sites.load_state_dict(state_dict.get("sites", {}), torch.device("cpu"))
        self._last_revival = {str(k): int(v) for k, v in state_dict.get("last_revival", {}).items()}
        self._window_start = int(state_dict.get("window_start", 0))
        self._previous_start = int(state_dict.get("previous_start", 0))
        self._previous_dead = {str(k): [bool(d) for d in v] for k, v in state_dict.get("previous_dead", {}).items()}
        self._previous_batches = {str(k): int(v) for k, v in state_dict.get("previous_batches", {}).items()}
        self._last_evaluated = int(state_dict.get("last_evaluated", -1))
