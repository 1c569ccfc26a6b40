"""AutoClip: gradient clipping with thresholds learned from the run's own gradient norms."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_convergence.callbacks._sharding import ShardLayout, local_gradients, unreadable_sharding, world_sum
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.remedies.clipping import (
    PercentileThreshold,
    ZScoreThreshold,
    adaptive_clip_,
    clip_coefficient,
    global_norm,
    scale_gradients_,
)
from lightning_convergence.remedies.sharded_clipping import sharded_adaptive_clip_
from lightning_convergence import tags
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.stats import Backend, validate_backend
from lightning_convergence.stats.host_window import HostWindow
from lightning_convergence.stats.sharding import local_view
from lightning_convergence.stats.window import DeviceWindow
from lightning_convergence.validation import check_bool, check_positive_float, check_positive_int

Mode = Literal["percentile", "zscore", "agc"]
GUARDED_REMEDIES = frozenset({"reinit_units", "rollback", "lr_scale", "undo", "warmup"})
_DEFAULT_WARMUP = {"percentile": 0, "zscore": 25, "agc": 0}


class AutoClip(ConvergenceCallback):
    """Clips gradients to a threshold learned from the run, in one of three published ways.

    - ``"percentile"`` (default; Seetharaman et al. 2020): clip the global norm to the
      ``percentile``-th percentile of the last ``window`` pre-clip global norms, the current one
      included. The paper's p=10 clips most steps a little; it is a training rule, not a spike
      guard.
    - ``"zscore"`` (Kumar et al. 2025, ZClip): an EMA of the norm's mean and variance; a norm with
      z-score above ``z_thresh`` is clipped to ``mu + z_thresh**2 * sigma / z``. Only outliers are
      touched. ZClip's package also caps every norm at 1.0 by default; ``max_norm`` offers such a
      cap but leaves it off, because a fixed cap is the guessed threshold this callback replaces.
      ``min_ratio`` asks more of an outlier: a norm also at least that multiple of the running
      mean. In ``default_callbacks(auto_remediate=True)`` it is 10: on 6 healthy runs of the
      calibration sweep at or next to their best learning rate, the steps a z-score of 4 picks
      were 1.9x to 4.7x the mean, and clipping them changed where those chaotic runs ended by
      more than 10% either way; the spikes that wreck a run are 100x and more. For
      ``guard_remedy_steps`` steps after another remedy of the suite acted (a revival, a rollback,
      an LR change, a warmup), every z-score outlier is clipped again (``min_ratio`` 1): a
      remedy's transient is where a spike does harm.
    - ``"agc"`` (Brock et al. 2021): unit-wise, each output unit's gradient norm is capped at
      ``clip_factor`` times its weight norm (at least ``eps``); the final layer is excluded by
      default, as the paper advises.

    Runs in ``on_before_optimizer_step``: gradients are unscaled (AMP) and synced (DDP), and
    Lightning's own ``gradient_clip_val``, if set, clips after it (ours first, the fixed cap
    after). The global modes reuse the gradient pass GradientNormMonitor makes when both are
    present. Every per-step decision is a ``clamp``/``where`` on the device: no host read except
    on logging steps. Non-finite norms never enter the history and are never clipped (the skip
    remedy of GradientNormMonitor handles them); a step the fp16 scaler will skip (Inf gradients)
    leaves the history alone.

    Under FSDP2 or tensor parallelism (DTensor parameters, ``ModelParallelStrategy``) the global
    norm is the shared pass's reduced one (one all_reduce per step), the same on every rank, so
    every rank clips its local shards by the same coefficient. AGC clips a unit on its local rows
    when its unit dimension is not split (``Shard(0)`` of a matrix) and merges the norms of the
    other tensors over the ranks in one all_reduce. Parameters the suite cannot read (FSDP1's flat
    views, DeepSpeed's partitions) are refused when training starts, by what they are, not by the
    strategy's name.

    Args:
        mode: ``"percentile"``, ``"zscore"`` or ``"agc"``.
        percentile: percentile mode, in (0, 100].
        window: percentile mode, optimizer steps of history.
        include_current: percentile mode, clip against a history that includes this step's norm.
        z_thresh: zscore mode, z-score above which a norm is clipped.
        alpha: zscore mode, EMA smoothing in (0, 1).
        min_ratio: zscore mode, the least multiple of the running mean a clipped norm has (>= 1;
            1 is ZClip as published).
        guard_remedy_steps: zscore mode, steps after another remedy of the suite during which
            ``min_ratio`` is 1; ``None``: never.
        max_norm: optional hard cap on the global norm (percentile and zscore modes).
        clip_factor: agc mode, the ratio of gradient to weight norm allowed per unit.
        eps: agc mode, the least weight norm a unit is credited with.
        exclude_final_layer: agc mode, leave the final layer unclipped: the last module, in the
            order the model registers them, that owns parameters (the classifier head of a
            typical model).
        clip_warmup_steps: steps before clipping starts; ``None``: 0 for percentile and agc, 25 for
            zscore (ZClip's default, the steps that initialise its EMA).
        auto_remediate: ``False`` computes and logs the thresholds without clipping (a dry run).
        log_every_n_steps: logging cadence; ``None`` uses the Trainer's.
        backend: statistics backend (see ``lightning_convergence.stats``).
        report_window_steps: rate limit of the run log.

    Raises:
        ValueError, TypeError: an argument out of range or of the wrong type.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[AutoClip(mode="zscore")], logger=False)
    """

    state_key_fields = ("mode", "percentile", "z_thresh")

    def __init__(
        self,
        mode: Mode = "percentile",
        percentile: float = 10.0,
        window: int = 1000,
        include_current: bool = True,
        z_thresh: float = 2.5,
        alpha: float = 0.97,
        min_ratio: float = 1.0,
        guard_remedy_steps: int | None = None,
        max_norm: float | None = None,
        clip_factor: float = 0.01,
        eps: float = 1e-3,
        exclude_final_layer: bool = True,
        clip_warmup_steps: int | None = None,
        auto_remediate: bool = True,
        log_every_n_steps: int | None = None,
        backend: Backend = "auto",
        report_window_steps: int = 500,
    ) -> None:
        super().__init__(auto_remediate=auto_remediate, report_window_steps=report_window_steps,
                         log_every_n_steps=log_every_n_steps)
        if mode not in _DEFAULT_WARMUP:
            raise ValueError(f"`mode` must be one of {tuple(_DEFAULT_WARMUP)}, got {mode!r}.")
        check_positive_float("percentile", percentile)
        if percentile > 100:
            raise ValueError(f"`percentile` must be in (0, 100], got {percentile!r}.")
        check_positive_int("window", window)
        if window > 2**24:
            raise ValueError(f"`window` must be <= 2**24 (torch.quantile's limit), got {window!r}.")
        check_bool("include_current", include_current)
        check_positive_float("z_thresh", z_thresh)
        check_positive_float("alpha", alpha)
        if alpha >= 1:
            raise ValueError(f"`alpha` must be in (0, 1), got {alpha!r}.")
        check_positive_float("min_ratio", min_ratio)
        if min_ratio < 1:
            raise ValueError(f"`min_ratio` must be >= 1 (a multiple of the running mean), got {min_ratio!r}.")
        check_positive_int("guard_remedy_steps", guard_remedy_steps, allow_none=True)
        if max_norm is not None:
            check_positive_float("max_norm", max_norm)
        check_positive_float("clip_factor", clip_factor)
        check_positive_float("eps", eps)
        check_bool("exclude_final_layer", exclude_final_layer)
        if clip_warmup_steps is not None and (isinstance(clip_warmup_steps, bool) or not isinstance(clip_warmup_steps, int)):
            raise TypeError(f"`clip_warmup_steps` must be an int or None, got {clip_warmup_steps!r}.")
        if clip_warmup_steps is not None and clip_warmup_steps < 0:
            raise ValueError(f"`clip_warmup_steps` must be >= 0, got {clip_warmup_steps!r}.")
        self.mode = mode
        self.percentile = float(percentile)
        self.window = window
        self.include_current = include_current
        self.z_thresh = float(z_thresh)
        self.alpha = float(alpha)
        self.min_ratio = float(min_ratio)
        self.guard_remedy_steps = guard_remedy_steps
        self._remedies_seen, self._last_remedy_step = 0, None  # other callbacks' remedies in the log
        self.max_norm = None if max_norm is None else float(max_norm)
        self.clip_factor = float(clip_factor)
        self.eps = float(eps)
        self.exclude_final_layer = exclude_final_layer
        self.clip_warmup_steps = _DEFAULT_WARMUP[mode] if clip_warmup_steps is None else clip_warmup_steps
        self.backend = validate_backend(backend)
        self._rule = self._make_rule()
        self._steps = 0  # optimizer steps seen (host-side count: no read needed)
        self._window = DeviceWindow()  # clipping in this logging window
        for name in ("steps", "clipped_steps", "unit_fraction_sum"):
            self._window.declare(name, (), "sum")
        self._window.declare("first_clipped_step", (), "min")
        self._window.declare("last_clipped_step", (), "max")
        # This step's pre-clip norm, threshold and clip coefficient (None: not clipping); floats
        # on the host path.
        self._last: tuple[Tensor | float, Tensor | float, Tensor | float | None] | None = None
        self._pending_rule: dict | None = None
        self._final_module: str | None = None

    def _make_rule(self) -> PercentileThreshold | ZScoreThreshold | None:
        if self.mode == "percentile":
            return PercentileThreshold(self.percentile, self.window, self.include_current)
        if self.mode == "zscore":
            return ZScoreThreshold(self.z_thresh, self.alpha, warmup_steps=self.clip_warmup_steps,
                                   min_ratio=self.min_ratio)
        return None

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        context = self.context(trainer)
        if trainer.fast_dev_run or context.probing:  # a range test's steps are undone afterwards
            return
        params, names = context.parameters(pl_module, optimizer)
        if not params:
            return
        step = trainer.global_step
        warm = self._steps >= self.clip_warmup_steps
        self._steps += 1
        logging = self._clock.closes_window(step, self.logging_cadence(trainer))
        if self.mode == "agc":
            active = warm and self.is_acting(trainer)
            layout = context.shard_layout(trainer, pl_module, optimizer)
            fraction = self._clip_agc(params, names, active, layout)  # of units clipped this step
            clipped = (fraction > 0).to(torch.float32)
            norm = threshold = scale = torch.full((), math.nan, device=fraction.device)
        else:
            sumsq, _ = context.gradient_statistics(trainer, pl_module, optimizer, self.backend, full=False)
            if isinstance(self._rule, ZScoreThreshold) and self.guard_remedy_steps is not None:
                self._rule.min_ratio = 1.0 if self._guarding(trainer, step) else self.min_ratio
            norm = global_norm(sumsq)  # a float on the host path (gradients on the CPU)
            threshold = self._rule.update(norm)
            coefficient = clip_coefficient(norm, threshold, self.max_norm)
            unclipped = isinstance(coefficient, float) and coefficient == 1.0  # the host path, under the threshold
            # Whether it acts matters only for a clip, and for the scale that a logging step shows.
            active = warm and (logging or not unclipped) and self.is_acting(trainer)
            clipped = coefficient < 1.0 if isinstance(coefficient, float) else (coefficient < 1.0).to(torch.float32)
            if active and not unclipped:
                # The coefficient comes from the global norm (reduced under sharding): every rank
                # scales its local shards by the same factor.
                scale_gradients_(local_gradients(params), coefficient)
            else:
                clipped = False if isinstance(clipped, bool) else torch.zeros_like(clipped)
            scale = coefficient if active else None
            fraction = clipped
        self._update_window(step, clipped, fraction)
        self._last = (norm, threshold, scale)  # the logged values come from these: no op on an ordinary step
        if logging:
            self._log(trainer, step)

    def _guarding(self, trainer: Trainer, step: int) -> bool:
        """Whether another remedy of the suite acted within ``guard_remedy_steps`` (host state:
        the run log's new interventions since the last step, no device read)."""
        interventions = self.context(trainer).log.interventions
        for record in interventions[self._remedies_seen:]:
            if record.action in GUARDED_REMEDIES and record.source != self.source:
                self._last_remedy_step = record.step
        self._remedies_seen = len(interventions)
        return self._last_remedy_step is not None and step - self._last_remedy_step < self.guard_remedy_steps

    def _clip_agc(self, params: list, names: list[str], active: bool, layout: ShardLayout | None) -> Tensor:
        all_params, kept = params, {id(p) for p in params}
        if self.exclude_final_layer and self._final_module is not None:
            final = self._final_module
            # A parameter of the final module is named "<final>.<name>" with no further dot.
            params = [p for p, n in zip(params, names) if n.rsplit(".", 1)[0] != final and n != final]
            kept = {id(p) for p in params}
        device = local_view(params[0]).device if params else torch.device("cpu")
        if not active:
            return torch.zeros((), device=device)
        if layout is not None:
            # Under sharding: one all_reduce(SUM) per step, reached by every rank (``active`` and
            # the parameters are the same on every rank).
            weights = layout.weights[[i for i, p in enumerate(all_params) if id(p) in kept]]
            return sharded_adaptive_clip_(params, self.clip_factor, self.eps, weights, world_sum).to(device)
        fraction = adaptive_clip_(params, self.clip_factor, self.eps)
        return fraction.to(device)

    def _update_window(self, step: int, clipped: Tensor | bool, fraction: Tensor | bool) -> None:
        """Accumulate on the device: steps, clipped steps, first/last clipped step, unit fraction
        (on the host, from a bool, on the host path)."""
        if isinstance(clipped, bool):
            self._window = HostWindow.like(self._window)
            if not clipped:  # the usual step: the other slots would merge their identities
                self._window.update(steps=1.0)
                return
            self._window.update(steps=1.0, clipped_steps=clipped, unit_fraction_sum=fraction,
                                first_clipped_step=float(step) if clipped else math.inf,
                                last_clipped_step=float(step) if clipped else -math.inf)
            return
        did_clip = clipped > 0
        self._window.update(
            steps=torch.ones((), device=clipped.device), clipped_steps=clipped, unit_fraction_sum=fraction,
            first_clipped_step=torch.where(did_clip, float(step), math.inf),
            last_clipped_step=torch.where(did_clip, float(step), -math.inf),
        )

    def _log(self, trainer: Trainer, step: int) -> None:
        """One host read: the window's clip counts and this step's norms."""
        if not self._window.allocated or self._last is None:
            return
        norm, threshold, scale = self._last
        # z-score mode clips only outliers (its threshold is inf otherwise): log its onset line,
        # from the EMA as the last step left it.
        shown = self._rule.onset() if isinstance(self._rule, ZScoreThreshold) else threshold
        if isinstance(norm, float):  # the host path
            post = norm * (1.0 if scale is None else scale)  # the norm after the clip
            last = torch.tensor([norm, float(shown), post], dtype=torch.float64)
        else:
            post = norm.to(torch.float64) * (1.0 if scale is None else scale)
            last = torch.stack([norm.double(), shown.to(norm.device).double(), post.double()])
        extra = {"last": last}
        if isinstance(self._rule, ZScoreThreshold):
            extra["rule_initialised"] = self._rule.initialised_flag().to(last.device)
        values = self._window.read(extra=extra)
        if isinstance(self._rule, ZScoreThreshold):
            self._rule.note_read(values["rule_initialised"])
        self._window.reset()
        if values["steps"] == 0:
            return  # nothing since the last logging step (the end of fit right after one)
        steps, clipped, fraction = values["steps"], values["clipped_steps"], values["unit_fraction_sum"]
        first, last = values["first_clipped_step"], values["last_clipped_step"]
        norm, threshold, post = values["last"]
        metrics = {tags.AUTOCLIP_CLIPPED_FRACTION: clipped / max(steps, 1)}
        if self.mode == "agc":
            metrics[tags.AUTOCLIP_CLIPPED_UNIT_FRACTION] = fraction / max(steps, 1)
        else:
            metrics.update({tags.AUTOCLIP_NORM: norm, tags.AUTOCLIP_THRESHOLD: threshold,
                            tags.AUTOCLIP_CLIPPED_NORM: post})
        log_scalars(trainer, metrics, step)
        if clipped > 0 and math.isfinite(first):
            # One record per logging window, not one per clipped step.
            detail = {"mode": self.mode, "clipped_steps": int(round(clipped)), "steps": int(steps),
                      "first_step": int(first), "last_step": int(last)}
            if self.mode == "agc":
                detail["mean_clipped_unit_fraction"] = fraction / steps
            self.record_intervention(trainer, "clip", int(first), detail)

    @override
    def _flush(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(trainer, trainer.global_step)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # The model is sharded by now (configure_model and the strategy's setup ran). Every rank
        # sees the same parameters' kinds, so every rank refuses alike.
        self._remedies_seen, self._last_remedy_step = 0, None  # the log is read afresh (a resumed one too)
        reason = unreadable_sharding(trainer, pl_module)
        if reason is not None:
            raise RuntimeError(f"AutoClip cannot clip this run's gradients: {reason}. Clipping with a "
                               "rank-local norm would be wrong.")
        # The final layer for AGC: the last module, in registration order, owning parameters.
        owners = [name for name, m in pl_module.named_modules() if any(True for _ in m.parameters(recurse=False))]
        self._final_module = owners[-1] if owners else None
        if self._pending_rule is not None and self._rule is not None:
            self._rule.load_state_dict(self._pending_rule)
            self._pending_rule = None

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["steps"] = self._steps
        state["rule"] = self._rule.state_dict() if self._rule is not None else {}
        state["window"] = self._window.state_dict()
        return state

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._steps = int(state_dict.get("steps", 0))
        self._pending_rule = state_dict.get("rule") or None
        window = state_dict.get("window")
        if isinstance(window, dict):  # an older checkpoint's packed window starts afresh
            self._window.load_state_dict(window)
