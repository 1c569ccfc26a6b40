"""Every logger tag the suite writes, and the TensorBoard panels that group them.

This module owns the tag names: writers call its constants and families
(``tags.grad_norm(layer)``, ``tags.GRAD_NORM_TOTAL``), the TensorBoard custom-scalars layout
(``recorder.tensorboard.custom_scalars_layout``) and the figure of ``lightning-convergence report``
(``readback.panels``) are generated from it. Nothing else spells a tag, a tag prefix or a pattern.

All tags live under :data:`ROOT` (``convergence/``), so that none collides with a user's key. No
Lightning import here: the report command reads logs back on machines without it.

Example:
    >>> grad_norm("encoder.0"), GRAD_NORM_TOTAL
    ('convergence/grad_norm/encoder.0', 'convergence/grad_norm/total')
    >>> lr(group=1, optimizer=2)
    'convergence/lr/opt2/group1'
    >>> panel_of(dead_fraction("fc1")).title
    'dead fraction'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "convergence/"


@dataclass(frozen=True)
class Family:
    """The tags ``convergence/<path>/<key>``, one per key (a layer, an input part, a source).

    Example:
        >>> weight_norm("fc1"), weight_norm.prefix, weight_norm.key_of("convergence/weight_norm/fc1")
        ('convergence/weight_norm/fc1', 'convergence/weight_norm/', 'fc1')
    """

    path: str

    def __call__(self, key: str) -> str:
        return f"{self.prefix}{key}"

    @property
    def prefix(self) -> str:
        return f"{ROOT}{self.path}/"

    def owns(self, tag: str) -> bool:
        """Whether ``tag`` is one of this family's (with a non-empty key)."""
        return tag.startswith(self.prefix) and len(tag) > len(self.prefix)

    def key_of(self, tag: str) -> str:
        """The key of one of this family's tags (the layer, the part, the source)."""
        return tag[len(self.prefix):]


def is_suite_tag(tag: str) -> bool:
    """Whether ``tag`` is one the suite writes (rather than the user's or Lightning's)."""
    return tag.startswith(ROOT)


def short(tag: str) -> str:
    """``tag`` without :data:`ROOT`: ``lr_factor/plateau_advisor`` for a label."""
    return tag[len(ROOT):] if is_suite_tag(tag) else tag


# --- gradients (GradientNormMonitor) ---------------------------------------------------------
grad_norm = Family("grad_norm")
GRAD_NORM_TOTAL = grad_norm("total")
grad_max_abs = Family("grad_max_abs")
GRAD_MAX_ABS_TOTAL = grad_max_abs("total")
GRAD_NONFINITE_STEPS = f"{ROOT}grad_nonfinite_steps"
GRAD_NONFINITE_VALUES = f"{ROOT}grad_nonfinite_values"
GRAD_SPIKE_STEPS = f"{ROOT}grad_spike_steps"
weight_norm = Family("weight_norm")
update_ratio = Family("update_ratio")
grad_hist = Family("grad_hist")  # histogram

# --- units (DeadNeuronTracker) ---------------------------------------------------------------
dead_fraction = Family("dead_fraction")
dormant_fraction = Family("dormant_fraction")
saturation = Family("saturation")
unit_activity = Family("unit_activity")  # histogram

# --- clipping (AutoClip) ---------------------------------------------------------------------
autoclip = Family("autoclip")
AUTOCLIP_NORM = autoclip("norm")
AUTOCLIP_THRESHOLD = autoclip("threshold")
AUTOCLIP_CLIPPED_NORM = autoclip("clipped_norm")
AUTOCLIP_CLIPPED_FRACTION = autoclip("clipped_fraction")
AUTOCLIP_CLIPPED_UNIT_FRACTION = autoclip("clipped_unit_fraction")

# --- learning rate (WarmupScheduler, PlateauAdvisor) -----------------------------------------
LR_FACTOR = f"{ROOT}lr_factor"  # the shared LR control's factor on optimizer 0, group 0
lr_factor = Family("lr_factor")  # one callback's own factor: lr_factor("plateau_advisor")
effective_lr = Family("lr")


def lr(group: int, optimizer: int = 0) -> str:
    """The effective LR of one param group: ``lr/group<i>``, ``lr/opt<k>/group<i>`` for k > 0."""
    return effective_lr(f"group{group}" if optimizer == 0 else f"opt{optimizer}/group{group}")


# --- loss regime (PlateauAdvisor) ------------------------------------------------------------
loss = Family("loss")  # loss(monitor) for the monitored metric
LOSS_TRAIN_EMA = loss("train_ema")
LOSS_BEST_EMA = loss("best_ema")

# --- inputs and data (InputSanityChecker, TrainingSpeedMonitor) -----------------------------
inputs_rms_max = Family("inputs/rms_max")
inputs_nonfinite = Family("inputs/nonfinite")
data = Family("data")
DATA_WAIT_FRACTION = data("wait_fraction")  # median wait for a batch over (wait + compute), per window
DATA_WAIT_MS = data("wait_ms")  # median wait for a batch within an epoch, ms

# --- speed (TrainingSpeedMonitor) ------------------------------------------------------------
speed_share = Family("speed/share")  # speed_share(phase): that phase's share of the window's wall time
speed_run_share = Family("speed/run_share")  # the same for the whole run, at its last step
speed = Family("speed")
SPEED_STEP_MS = speed("step_ms")
SPEED_SAMPLES_PER_S = speed("samples_per_s")
SPEED_TOKENS_PER_S = speed("tokens_per_s")
SPEED_RUN_SAMPLES_PER_S = speed("run_samples_per_s")
SPEED_CPU_SHARE = speed("cpu_share")  # process CPU time over wall time within steps, on a CPU
SPEED_DEVICE_UTILIZATION = speed("device_utilization")
SPEED_MFU = speed("mfu")
SPEED_HOST_SYNCS = speed("host_syncs_per_step")

# --- text ------------------------------------------------------------------------------------
DIAGNOSES = f"{ROOT}diagnoses"
PREFLIGHT = f"{ROOT}preflight"  # PreflightCheck's checks, one text at step 0

HISTOGRAMS: tuple[Family, ...] = (grad_hist, unit_activity)


@dataclass(frozen=True)
class Panel:
    """One chart of the custom-scalars layout: the single tags and families drawn on it.

    ``exclude`` names single tags of a family that another panel draws (the total gradient norm).
    """

    title: str
    tags: tuple[str | Family, ...]
    exclude: tuple[str, ...] = ()

    def matches(self, tag: str) -> bool:
        if tag in self.exclude:
            return False
        return any(tag == t if isinstance(t, str) else t.owns(tag) for t in self.tags)

    def patterns(self) -> list[str]:
        """TensorBoard's regular expressions for this panel (matched from the tag's start)."""
        out = []
        for t in self.tags:
            if isinstance(t, str):
                out.append(re.escape(t) + "$")
            else:
                skip = "".join(f"(?!{re.escape(e[len(t.prefix):])}$)" for e in self.exclude if t.owns(e))
                out.append(re.escape(t.prefix) + skip + ".+")
        return out


PANEL_GROUPS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("convergence: gradients", (
        Panel("total gradient norm", (GRAD_NORM_TOTAL,)),
        Panel("gradient norm per layer", (grad_norm,), exclude=(GRAD_NORM_TOTAL,)),
        Panel("max |gradient|", (grad_max_abs,)),
        Panel("non-finite and spike steps", (GRAD_NONFINITE_STEPS, GRAD_NONFINITE_VALUES, GRAD_SPIKE_STEPS)),
        Panel("update / weight ratio", (update_ratio,)),
        Panel("weight norm per layer", (weight_norm,)),
    )),
    ("convergence: dead units", (
        Panel("dead fraction", (dead_fraction,)),
        Panel("dormant fraction", (dormant_fraction,)),
        Panel("saturation", (saturation,)),
    )),
    ("convergence: clipping", (
        Panel("norm vs threshold", (AUTOCLIP_NORM, AUTOCLIP_THRESHOLD, AUTOCLIP_CLIPPED_NORM)),
        Panel("clipped fraction", (AUTOCLIP_CLIPPED_FRACTION, AUTOCLIP_CLIPPED_UNIT_FRACTION)),
    )),
    ("convergence: learning rate", (
        Panel("our LR factor", (LR_FACTOR, lr_factor)),
        Panel("effective LR", (effective_lr,)),
    )),
    ("convergence: loss regime", (
        Panel("loss", (loss,)),
    )),
    ("convergence: inputs and data", (
        Panel("input scale (largest channel RMS)", (inputs_rms_max,)),
        Panel("non-finite input values", (inputs_nonfinite,)),
        Panel("waiting for data", (data,)),
    )),
    ("convergence: speed", (
        Panel("where the wall time goes", (speed_share,)),
        Panel("where the whole run's time went", (speed_run_share,)),
        Panel("throughput", (SPEED_SAMPLES_PER_S, SPEED_TOKENS_PER_S, SPEED_RUN_SAMPLES_PER_S)),
        Panel("step time (ms)", (SPEED_STEP_MS,)),
        Panel("device", (SPEED_CPU_SHARE, SPEED_DEVICE_UTILIZATION, SPEED_MFU, SPEED_HOST_SYNCS)),
    )),
)


def panel_of(tag: str) -> Panel | None:
    """The first layout panel that draws scalar ``tag``, or ``None``."""
    for _, panels in PANEL_GROUPS:
        for panel in panels:
            if panel.matches(tag):
                return panel
    return None
