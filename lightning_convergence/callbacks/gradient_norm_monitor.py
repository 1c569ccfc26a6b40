"""GradientNormMonitor: gradient health every optimizer step, without a host sync.

Runs in ``on_before_optimizer_step``, where gradients are unscaled (AMP), accumulated, synced
across DDP ranks and not yet clipped by Lightning's ``gradient_clip_val``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_convergence.callbacks._layers import ForwardOrderRecorder, GroupBy, layer_of, ordered_layers
from lightning_convergence.callbacks._sharding import ShardLayout, local_gradients, unreadable_sharding
from lightning_convergence.callbacks._update_ratios import UpdateSample
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence import tags
from lightning_convergence.rules.causes import is_adaptive
from lightning_convergence.rules.findings import Finding
from lightning_convergence.rules.gradient_health import is_rising, norm_trend
from lightning_convergence.recorder.tensorboard import log_scalar_series, log_scalars, write_histograms
from lightning_convergence.rules import GradientHealthRule, GradientThresholds, GradientWindow, SpikeDetector
from lightning_convergence.rules.gradient_window import step_norms
from lightning_convergence.stats import ABSMAX, NONFINITE, Backend, tensor_stats, validate_backend
from lightning_convergence.stats.host import on_host_path
from lightning_convergence.validation import check_positive_float, check_positive_int


_HISTOGRAM_SAMPLES = 4096  # values per layer histogram
# Update/weight ratios are also measured on these first optimizer steps, before the first logging
# step: a learning rate far too high shows in the first updates, and the run may be ruined by the
# first logging step.
_EARLY_UPDATE_STEPS = frozenset({0, 1, 3, 7, 15, 31})


@dataclass
class _Track:
    """Everything the monitor keeps for one optimizer."""

    params: list[torch.nn.Parameter]
    layers: list[str]
    group_index: Tensor  # [num_params] long, on the gradients' device
    group_list: list[int]  # the same, on the host
    window: GradientWindow
    spike: SpikeDetector
    rule: GradientHealthRule
    layout: ShardLayout | None = None  # how the parameters are sharded; None: whole on every rank
    consecutive_skips: int = 0
    finite_seen: bool = False  # a step with finite gradients was seen in this fit
    skipped_at: int | None = None  # the last step skipped
    updates: UpdateSample = field(default_factory=UpdateSample)  # sampled weights before an update


class GradientNormMonitor(ConvergenceCallback):
    """Watches gradient norms per layer, explains exploding, vanishing and non-finite gradients.

    Every optimizer step it computes, on the device, the total and per-layer gradient norms, a
    spike test of the total norm against its own recent median, and non-finite counts. Every
    ``log_every_n_steps`` it reads all of it on the host in one transfer, logs it, and evaluates
    the rules. With ``auto_remediate=True`` a step with non-finite gradients under fp32/bf16 is
    skipped (every ``p.grad = None``) and after ``max_consecutive_skips`` such steps in a row the
    run stops on every rank, unless finite steps came first and an acting PlateauAdvisor takes it
    as a divergence (a rollback, an LR cut). Under fp16 the GradScaler's own skip is left alone.

    Args:
        group_by: ``"module"`` (one norm per module that owns parameters, e.g.
            ``encoder.layers.0.attn``) or ``"parameter"`` (one per parameter tensor).
        log_every_n_steps: logging cadence in optimizer steps; ``None`` uses the Trainer's.
        histogram_every_n_steps: cadence of per-layer gradient histograms (TensorBoard only);
            ``None`` turns them off.
        track_updates: log weight norms (exact) and the update-to-weight ratio on logging steps
            and on optimizer steps 0, 1, 3, 7, 15 and 31 (their median over layers is evidence
            for the ranking of causes), the ratio estimated on a fixed uniform random sample of
            4096 values per tensor
            (positions drawn once: 32 KB per tensor; the sampled values, 16 KB per tensor, are
            held between a logging step and the next batch).
        spike_factor: a total norm above this multiple of its recent median is a spike.
        spike_history: how many recent finite total norms the median is taken over.
        min_history: no spike is flagged before this many finite norms were seen.
        thresholds: the thresholds of the layer rules (vanishing, layer growth, AMP).
        auto_remediate: skip steps with non-finite gradients, stop when they persist.
        max_consecutive_skips: consecutive skipped steps after which the run stops.
        backend: statistics backend, ``"auto" | "reference" | "foreach" | "triton"``.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.

    Raises:
        ValueError: an argument is out of range or an unknown name.
        TypeError: an argument has the wrong type (for example a bool where an int is needed).

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[GradientNormMonitor(log_every_n_steps=10)], logger=False)
    """

    state_key_fields = ("group_by", "spike_factor")

    def __init__(
        self,
        group_by: GroupBy = "module",
        log_every_n_steps: int | None = None,
        histogram_every_n_steps: int | None = 500,
        track_updates: bool = True,
        spike_factor: float = 10.0,
        spike_history: int = 32,
        min_history: int = 8,
        thresholds: GradientThresholds | None = None,
        auto_remediate: bool = False,
        max_consecutive_skips: int = 5,
        backend: Backend = "auto",
        report_window_steps: int = 500,
    ) -> None:
        super().__init__(auto_remediate=auto_remediate, report_window_steps=report_window_steps,
                         log_every_n_steps=log_every_n_steps)
        if group_by not in ("module", "parameter"):
            raise ValueError(f"`group_by` must be 'module' or 'parameter', got {group_by!r}.")
        check_positive_int("histogram_every_n_steps", histogram_every_n_steps, allow_none=True)
        if not isinstance(track_updates, bool):
            raise TypeError(f"`track_updates` must be a bool, got {track_updates!r}.")
        check_positive_float("spike_factor", spike_factor, minimum=1.0)
        check_positive_int("spike_history", spike_history)
        check_positive_int("min_history", min_history)
        if min_history > spike_history:
            raise ValueError(f"`min_history` must be <= `spike_history` ({spike_history}), got {min_history!r}.")
        if thresholds is not None and not isinstance(thresholds, GradientThresholds):
            raise TypeError(f"`thresholds` must be a GradientThresholds, got {thresholds!r}.")
        check_positive_int("max_consecutive_skips", max_consecutive_skips)
        self.group_by = group_by
        self.histogram_every_n_steps = histogram_every_n_steps
        self.track_updates = track_updates
        self.spike_factor = float(spike_factor)
        self.spike_history = spike_history
        self.min_history = min_history
        self.thresholds = thresholds or GradientThresholds()
        self.max_consecutive_skips = max_consecutive_skips
        self.backend = validate_backend(backend)
        self._tracks: dict[int, _Track] = {}
        self._unreadable: str | None = None  # why this run's gradients cannot be read (FSDP1, DeepSpeed)
        self._pending_tracks: dict[int, dict] = {}
        self._order = ForwardOrderRecorder()

    # ----------------------------------------------------------------- setting up

    def _track(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> _Track:
        index = next((i for i, opt in enumerate(trainer.optimizers) if opt is optimizer), 0)
        track = self._tracks.get(index)
        if track is not None:
            return track
        params, param_names = self.context(trainer).parameters(pl_module, optimizer)
        layers = ordered_layers(param_names, self.group_by, self._order.order)
        position = {layer: i for i, layer in enumerate(layers)}
        device = params[0].device if params else torch.device("cpu")
        group_index = torch.tensor([position[layer_of(n, self.group_by)] for n in param_names], device=device)
        track = _Track(
            params=params,
            layers=layers,
            group_index=group_index,
            group_list=group_index.tolist(),
            window=GradientWindow(len(layers), self.logging_cadence(trainer), host=on_host_path(group_index)),
            spike=SpikeDetector(self.spike_history, self.spike_factor, self.min_history),
            rule=GradientHealthRule(layers, self.thresholds),
            layout=self.context(trainer).shard_layout(trainer, pl_module, optimizer),
        )
        pending = self._pending_tracks.pop(index, None)
        if pending is not None:
            track.spike.load_state_dict(pending["spike"])
            track.rule.load_state_dict(pending["rule"])
            track.consecutive_skips = int(pending["consecutive_skips"])
            track.window.load_state_dict(pending.get("window", {}), device)
        self._tracks[index] = track
        return track

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._tracks = {}
        # A capability check, the same on every rank: rank-local pieces of flat (FSDP1) or
        # partitioned (DeepSpeed) parameters would give wrong norms, so say so and measure nothing.
        self._unreadable = unreadable_sharding(trainer, pl_module)
        if self._unreadable is not None:
            self.warn(f"not measuring gradients: {self._unreadable}.")
            return
        if not self._order.order:
            self._order.attach(pl_module)  # detached after the first optimizer step

    # ----------------------------------------------------------------- every step

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        self._order.detach()
        context = self.context(trainer)
        if context.probing or self._unreadable is not None:  # a range test's steps are undone afterwards
            return
        track = self._track(trainer, pl_module, optimizer)
        if not track.params:
            return
        step = trainer.global_step
        logging = self._clock.closes_window(step, self.logging_cadence(trainer))
        sumsq, full = context.gradient_statistics(trainer, pl_module, optimizer, self.backend, full=logging)
        # [layers]; floats on the host path (gradients on the CPU, where reading them is free)
        total_norm, layer_sumsq = step_norms(sumsq, track.group_index, len(track.layers), track.group_list)
        spike, median = track.spike.update(total_norm)
        track.window.update(step, total_norm, spike, median, layer_sumsq)
        if logging:  # before a skip drops the gradients, so a bad step's values are still counted
            self._log_window(trainer, pl_module, track, step, full, layer_sumsq)
        elif self.track_updates and step in _EARLY_UPDATE_STEPS and not track.updates.pending:
            track.updates.take(track.params, step)
        if isinstance(total_norm, float) and math.isfinite(total_norm):  # the host path: nothing to skip
            track.consecutive_skips, track.finite_seen = 0, True
        elif self.is_acting(trainer) and _scaler(trainer) is None:  # the device path reads the norm here
            self._skip_if_nonfinite(trainer, track, total_norm, step)

    def _skip_if_nonfinite(self, trainer: Trainer, track: _Track, total_norm: Tensor | float, step: int) -> None:
        # The one host read per step that acting needs (as GradScaler's own found_inf check). Every
        # rank decides the same: gradients are identical on every DDP rank, and under sharding
        # ``total_norm`` was reduced over the ranks; so all or none reach ``skip_step``'s collective.
        if math.isfinite(total_norm if isinstance(total_norm, float) else total_norm.item()):
            track.consecutive_skips, track.finite_seen = 0, True
            return
        counts = tensor_stats(local_gradients(track.params), backend=self.backend)[:, NONFINITE]
        # Finite values whose squares overflow count 0: an explosion for the rules, not a skip.
        if not self.skip_step(trainer, track.params, counts, step, "nonfinite_gradients",
                              consecutive=track.consecutive_skips + 1):
            return
        track.consecutive_skips, track.skipped_at, context = track.consecutive_skips + 1, step, self.context(trainer)
        if track.consecutive_skips < self.max_consecutive_skips:
            return
        if track.finite_seen and context.recovers_divergence:  # it diverged: PlateauAdvisor rolls back
            context.recovery_request = {"found_by": "nonfinite_gradients", "skipped_steps": track.consecutive_skips}
            track.consecutive_skips = 0
        else:  # non-finite from the first step: a bug no learning rate fixes
            self._stop(trainer, track, step)

    def _stop(self, trainer: Trainer, track: _Track, step: int) -> None:
        skips = {"consecutive_skips": track.consecutive_skips}
        seen = (f"Gradients were NaN/Inf on {track.consecutive_skips} optimizer steps in a row up to "
                f"step {step}; each was skipped, and training was stopped because it is not recovering.")
        self.stop_training(trainer, step, "nonfinite_gradients", skips,
                           Finding("nonfinite_gradients", "critical", seen, evidence=dict(skips)))

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.probing(trainer):
            return
        track = self._tracks.get(0)
        loss = self.training_loss(trainer, outputs, host=track is not None and track.window.host)
        step = self._clock.batch_step(trainer.global_step)
        if track is not None and loss is not None:
            track.window.update_loss(step, loss)
        for track in self._tracks.values():
            # Decided by the steps and the skip, the same on every rank (a collective under sharding).
            if track.updates.pending and trainer.global_step > track.updates.step:
                if track.skipped_at == track.updates.step:  # it moved no weight: a ratio of 0 names nothing
                    track.updates.clear()
                else:
                    self._log_updates(trainer, track)

    # ----------------------------------------------------------------- logging steps

    def _log_window(self, trainer: Trainer, pl_module: LightningModule, track: _Track, step: int,
                    full: Tensor | None, layer_sumsq: Tensor | list[float]) -> None:
        # Brought back with the window in one transfer: this step's per-layer sums of squares,
        # its max |grad| and how many gradient tensors hold NaN/Inf.
        layer_sumsq = torch.as_tensor(layer_sumsq, dtype=torch.float32, device=track.group_index.device)
        extra = torch.cat([layer_sumsq, _step_extremes(full, layer_sumsq)])
        summary, values = track.window.read(extra=extra)
        track.window.reset()
        layer_norms = [math.sqrt(v) if v >= 0 else math.nan for v in values[: len(track.layers)]]
        max_abs, nonfinite_tensors = values[-2], values[-1]
        metrics = {tags.grad_norm(name): norm for name, norm in zip(track.layers, layer_norms)}
        metrics[tags.GRAD_MAX_ABS_TOTAL] = max_abs
        metrics[tags.GRAD_NONFINITE_STEPS] = summary.nonfinite_grad_steps
        metrics[tags.GRAD_SPIKE_STEPS] = summary.spike_steps
        if nonfinite_tensors:
            # This step has NaN/Inf somewhere: count them exactly (a pass only on such steps). The
            # branch is on reduced values, so under sharding every rank makes the count's collective.
            counts = tensor_stats(local_gradients(track.params), backend=self.backend)
            if track.layout is not None:
                counts = track.layout.tensor_stats(counts, count_nonfinite=True)  # collective: all_reduce
            metrics[tags.GRAD_NONFINITE_VALUES] = counts[:, NONFINITE].sum().item()
        log_scalar_series(trainer, tags.GRAD_NORM_TOTAL, summary.total_norm_trace[:-1])
        if summary.total_norm_trace:
            metrics[tags.GRAD_NORM_TOTAL] = summary.total_norm_trace[-1][1]
        log_scalars(trainer, metrics, step)
        trend = norm_trend([norm for _, norm in summary.total_norm_trace])
        if track is self._tracks.get(0) and trend["grad_norm_rising_share"] is not None and is_rising(trend):
            self.context(trainer).evidence.post(**trend)  # kept: later windows of a ruined run may fall
        first_grad, first_loss = summary.first_nonfinite_grad_step, summary.first_nonfinite_loss_step
        if track is self._tracks.get(0) and first_grad is not None and (first_loss is None or first_loss > first_grad):
            # NaN/Inf gradients from a loss that was still finite at that step.
            self.context(trainer).evidence.post(nonfinite_gradients_with_finite_loss=first_grad)
        self._evaluate(trainer, track, summary)
        if self.histogram_every_n_steps and (step + 1) % self.histogram_every_n_steps == 0:
            self._write_histograms(trainer, track, step)
        if self.track_updates:
            track.updates.take(track.params, step)

    def _evaluate(self, trainer: Trainer, track: _Track, summary) -> None:
        scaler = _scaler(trainer)
        bad = [n for n, c in zip(track.layers, summary.layer_nonfinite_steps) if c > 0]  # forward order
        findings = track.rule.evaluate(
            summary,
            amp_scaler=scaler is not None,
            amp_scale=float(scaler.get_scale()) if scaler is not None else None,
            first_nonfinite_layer=bad[0] if bad else None,
            last_nonfinite_layer=bad[-1] if bad else None,
        )
        for finding in findings:
            self.record(trainer, finding)

    def _write_histograms(self, trainer: Trainer, track: _Track, step: int) -> None:
        # Under sharding, from this rank's local shards (no gather): rank 0's histogram shows its shard.
        by_layer: dict[str, list[Tensor]] = {}
        for layer_index, grad in zip(track.group_index.tolist(), local_gradients(track.params)):
            if grad is not None and grad.layout == torch.strided:
                by_layer.setdefault(track.layers[layer_index], []).append(grad.reshape(-1))
        tensors = {}
        for layer, grads in by_layer.items():
            # An evenly strided sample (no RNG) keeps a write cheap on a large layer: a histogram
            # of millions of values cost 0.5-0.8 s on the benchmark model; of 4096, milliseconds.
            stride = max(1, math.ceil(sum(g.numel() for g in grads) / _HISTOGRAM_SAMPLES))
            tensors[tags.grad_hist(layer)] = torch.cat([g[::stride] for g in grads])
        write_histograms(trainer, tensors, step)

    def _log_updates(self, trainer: Trainer, track: _Track) -> None:
        """Log exact weight norms and update/weight ratios estimated from the sampled values,
        each tensor's sums scaled up by its numel over its sample size (``_update_ratios``)."""
        exact_sq, sampled_sq, change_sq = track.updates.measure(
            track.params, track.group_index, len(track.layers), self.backend, track.layout)
        metrics: dict[str, float] = {}
        ratios = []
        for name, w, b, u in zip(track.layers, exact_sq, sampled_sq, change_sq):
            metrics[tags.weight_norm(name)] = math.sqrt(w)
            if b > 0:
                metrics[tags.update_ratio(name)] = math.sqrt(u / b)
                ratios.append(math.sqrt(u / b))
        log_scalars(trainer, metrics, track.updates.step)
        if ratios and track is self._tracks.get(0):
            self._post_update_ratios(trainer, sorted(ratios), track.updates.step)

    def _post_update_ratios(self, trainer: Trainer, ratios: list[float], step: int) -> None:
        """Post the ratios' median and maximum over layers, and the highest median so far (the first
        steps' ratios name a learning rate far too high even after a collapse)."""
        median = statistics.median(ratios)
        evidence = self.context(trainer).evidence
        peak = evidence.snapshot().get("update_ratio_peak")  # before this measurement
        evidence.post(update_ratio_median=median, update_ratio_max=ratios[-1], update_ratio_step=step,
                      adaptive_optimizer=is_adaptive(trainer.optimizers[0]))
        if math.isfinite(median) and (peak is None or median > peak):
            evidence.post(update_ratio_peak=median, update_ratio_peak_step=step)

    # ----------------------------------------------------------------- end of fit and state

    @override
    def _flush(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for track in self._tracks.values():
            track.updates.clear()  # free the sampled weights
            summary, _ = track.window.read()
            track.window.reset()
            self._evaluate(trainer, track, summary)

    @override
    def _remove_hooks(self) -> None:
        self._order.detach()

    @override
    def state_dict(self) -> dict[str, Any]:
        tracks = {index: {"spike": t.spike.state_dict(), "rule": t.rule.state_dict(),
                          "consecutive_skips": t.consecutive_skips, "window": t.window.state_dict()}
                  for index, t in self._tracks.items()}
        return {**super().state_dict(), "tracks": {**self._pending_tracks, **tracks},
                "forward_order": list(self._order.order)}

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._pending_tracks = {int(k): v for k, v in state_dict.get("tracks", {}).items()}
        self._order.order = list(state_dict.get("forward_order", []))


def _step_extremes(full: Tensor | None, like: Tensor) -> Tensor:
    """``[max |grad|, tensors with NaN/Inf]`` of one step from the full statistics ``[N, 3]``."""
    if full is None or full.numel() == 0:
        return like.new_zeros(2)
    return torch.stack([full[:, ABSMAX].amax(), full[:, NONFINITE].sum()]).to(like.dtype)


def _scaler(trainer: Trainer) -> Any:
    """The fp16 GradScaler of the precision plugin, or ``None``."""
    return getattr(trainer.precision_plugin, "scaler", None)
