"""Is the accelerator busy? Utilisation, MFU, host syncs and precision, turned into causes.

Fed what a GPU run measures at its logging steps (see ``TrainingSpeedMonitor``): NVML's
utilisation (the share of time a kernel was running), the model FLOPs utilisation (achieved
FLOP/s over the device's peak for the dtype, as Lightning's ``ThroughputMonitor`` computes it),
the host syncs counted in one sampled step (``torch.cuda.set_sync_debug_mode``), the precision
in use and whether the device has bf16. :func:`judge_device` returns a ``slow_training`` finding
whose ranked causes are ``host_sync_in_step``, ``low_device_utilization`` and
``fp32_where_bf16_fits``. Pure arithmetic on floats: tested on a CPU with made-up numbers; the
readings themselves come from a GPU and are unverified on this project's machines.

References:
    Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", 2022, appendix B (model
    FLOPs utilisation). Lightning's ``ThroughputMonitor`` and ``measure_flops``. PyTorch,
    "Performance Tuning Guide" (avoid unnecessary CPU-GPU synchronisation; use mixed precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lightning_convergence.rules.findings import Cause, Finding
from lightning_convergence.rules.wall_time import DEVICE_LAYER

LOW_UTILIZATION = 0.5  # NVML: a kernel ran less than half the time
LOW_MFU = 0.1  # a tenth of the peak: a small model or a starved device
SYNCS_PER_STEP = 1  # more than one sync per step (a loss read for logging is one)
FP32 = frozenset({"32-true", "32", "64-true", "64"})


def model_flops_utilization(flops_per_batch: float, batches: int, seconds: float, peak_flops: float) -> float | None:
    """Achieved FLOP/s over the device's peak: ``flops_per_batch * batches / seconds / peak_flops``.

    Example:
        >>> model_flops_utilization(1e12, batches=100, seconds=10.0, peak_flops=1e14)
        0.1
        >>> model_flops_utilization(1e12, batches=100, seconds=0.0, peak_flops=1e14) is None
        True
    """
    if not (seconds > 0 and peak_flops > 0 and batches > 0 and flops_per_batch > 0):
        return None
    return flops_per_batch * batches / seconds / peak_flops


@dataclass
class DeviceReadings:
    """One window of a GPU run (``None``: not measured)."""

    utilization: float | None = None  # 0..1
    mfu: float | None = None  # 0..1
    syncs_per_step: float | None = None
    precision: str | None = None
    bf16_supported: bool = False
    compute_share: float | None = None  # forward + backward + optimizer over the wall time


def judge_device(readings: DeviceReadings, first_step: int, last_step: int) -> Finding | None:
    """``slow_training`` with the device's causes, ranked, or ``None`` when nothing is wrong.

    Example:
        >>> f = judge_device(DeviceReadings(utilization=0.3, syncs_per_step=12, precision="32-true",
        ...                                 bf16_supported=True, compute_share=0.8), 0, 49)
        >>> [c.cause for c in f.causes]
        ['host_sync_in_step', 'low_device_utilization', 'fp32_where_bf16_fits']
    """
    r = readings
    found: list[tuple[Cause, str, str]] = []
    if r.syncs_per_step is not None and r.syncs_per_step > SYNCS_PER_STEP:
        found.append((Cause("host_sync_in_step", min(0.9, 0.6 + 0.02 * r.syncs_per_step),
                            {"syncs_per_step": r.syncs_per_step}),
                      f"the training step waits for the device {r.syncs_per_step:g} times (host syncs: .item(), "
                      ".cpu(), printing a tensor, a data-dependent shape)",
                      "remove .item(), .cpu() and tensor prints from the step; log tensors with self.log, which "
                      "reads them at logging steps only"))
    starved = r.utilization is not None and r.utilization < LOW_UTILIZATION
    weak = r.mfu is not None and r.mfu < LOW_MFU
    if starved or weak:
        said = []
        if r.utilization is not None:
            said.append(f"a kernel ran {r.utilization:.0%} of the time")
        if r.mfu is not None:
            said.append(f"the model used {r.mfu:.1%} of the device's peak FLOP/s")
        evidence = {k: v for k, v in (("utilization", r.utilization), ("mfu", r.mfu)) if v is not None}
        confidence = 0.7 if starved else 0.5
        found.append((Cause("low_device_utilization", confidence, evidence), "the device is underused: " +
                      " and ".join(said), "raise the batch size until the device is busy; torch.compile the model"))
    if r.precision in FP32 and r.bf16_supported and (r.compute_share or 0) >= 0.5:
        found.append((Cause("fp32_where_bf16_fits", 0.55, {"precision": r.precision,
                                                           "compute_share": round(r.compute_share, 3)}),
                      f"it computes in {r.precision} ({r.compute_share:.0%} of the time) on a device with bf16",
                      'Trainer(precision="bf16-mixed") (no loss scaling needed)'))
    if not found:
        return None
    found.sort(key=lambda f: -f[0].confidence)
    seen = f"Over steps {first_step}-{last_step} " + "; ".join(f[1] for f in found) + "."
    evidence = {k: v for k, v in vars(r).items()
                if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
    return Finding("slow_training", "warning", seen, layer=DEVICE_LAYER, evidence=evidence,
                   causes=tuple(f[0] for f in found), remedies=tuple(f[2] for f in found))
