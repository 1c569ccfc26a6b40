"""What TrainingSpeedMonitor reads from the Trainer, the loader, a batch and the machine."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import Trainer

from lightning_convergence.rules.wall_time import LoaderSettings, RunSettings


def loader_settings(trainer: Trainer) -> LoaderSettings:
    """The training DataLoader's workers, batch size and device, and the cores this process may use."""
    loader = getattr(trainer, "train_dataloader", None)
    val = getattr(trainer, "val_dataloaders", None)
    val = val[0] if isinstance(val, (list, tuple)) and val else val
    return LoaderSettings(num_workers=_int(loader, "num_workers"),
                          persistent_workers=_bool(loader, "persistent_workers"),
                          batch_size=_int(loader, "batch_size"), cpu_count=cpu_count(),
                          on_cpu=trainer.strategy.root_device.type == "cpu", val_num_workers=_int(val, "num_workers"),
                          val_persistent_workers=_bool(val, "persistent_workers"))


def _int(owner: Any, name: str) -> int | None:
    value = getattr(owner, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(owner: Any, name: str) -> bool | None:
    value = getattr(owner, name, None)
    return value if isinstance(value, bool) else None


def run_settings(trainer: Trainer) -> RunSettings:
    """The Trainer's knobs for logging and validation cadence."""
    return RunSettings(log_every_n_steps=trainer.log_every_n_steps or None,
                       val_check_interval=getattr(trainer, "val_check_interval", None),
                       check_val_every_n_epoch=getattr(trainer, "check_val_every_n_epoch", None),
                       max_epochs=_int(trainer, "max_epochs") if (_int(trainer, "max_epochs") or 0) > 0 else None)


def batch_size(batch: Any) -> int:
    """Samples in ``batch``: the first dimension of its first tensor (0 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, (list, tuple)):
        items = batch
    elif isinstance(batch, dict):
        items = list(batch.values())
    else:
        return 0
    for item in items:
        size = batch_size(item)
        if size:
            return size
    return 0


def cpu_count() -> int | None:
    """The cores this process may run on (its affinity where the platform says it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()
