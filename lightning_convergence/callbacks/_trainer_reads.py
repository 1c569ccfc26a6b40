"""What the suite's callbacks read from the Trainer and the module: the report's folder, the
batch's loss, the declared number of classes, the learning rate now, and values agreed across
ranks. Small functions shared by every callback; no state."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor

from lightning_convergence.stats.host import cpu_scalar, on_host_path


def report_directory(trainer: Trainer) -> str:
    """``trainer.log_dir`` as rank 0 sees it, without its broadcast.

    ``Trainer.log_dir`` broadcasts from rank 0, a collective: called on rank 0 alone (or from
    ``on_exception`` on the one rank that failed) it would hang. This repeats its rule locally.
    """
    if not trainer.loggers:
        return os.fspath(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return os.fspath(logger.log_dir)
    return os.fspath(logger.save_dir or trainer.default_root_dir)


LOSS_KEYS = ("train_loss", "loss")
"""The keys a module usually logs its training loss under, tried in this order when
``training_step`` returns no loss (manual optimisation)."""


def batch_loss(trainer: Trainer, outputs: Any, keys: tuple[str, ...] = LOSS_KEYS,
               host: bool = False) -> Tensor | float | None:
    """The batch's training loss (0-d, detached, float32, on the device; no host read).

    From ``training_step``'s outputs, with Lightning's division by ``accumulate_grad_batches``
    undone; when they hold none (manual optimisation returns nothing), the first of ``keys`` that
    the module logged this step (``self.log("train_loss", loss)``); else ``None``. With ``host``,
    a float32 loss on the CPU without accumulation comes back as its float (the host path: read
    for free, no copy made), the same value.
    """
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if (host and isinstance(loss, Tensor) and loss.dtype is torch.float32 and trainer.accumulate_grad_batches == 1
            and loss.numel() == 1 and on_host_path(loss)):
        return cpu_scalar(loss)
    if isinstance(loss, Tensor) and loss.numel() == 1:
        # A new tensor (never a view of the user's: callers keep it), made with as few ops as
        # possible: each dispatch costs microseconds on every step.
        loss = loss.detach()
        loss = loss if loss.dim() == 0 else loss.reshape(())
        accumulate = trainer.accumulate_grad_batches
        if loss.dtype != torch.float32:
            loss = loss.float()  # a copy
            return loss if accumulate == 1 else loss * accumulate
        return loss.clone() if accumulate == 1 else loss * accumulate
    for key in keys:
        logged = trainer.callback_metrics.get(key)
        if isinstance(logged, Tensor) and logged.numel() == 1:
            return logged.detach().reshape(()).float()
    return None


def module_num_classes(pl_module: LightningModule) -> int | None:
    """The number of classes the LightningModule declares (``num_classes``, or
    ``hparams.num_classes``), when it is an int of at least 2; else ``None``."""
    hparams = getattr(pl_module, "hparams", None)
    declared = getattr(pl_module, "num_classes", None)
    if declared is None and hparams is not None and hasattr(hparams, "get"):
        declared = hparams.get("num_classes")
    valid = isinstance(declared, int) and not isinstance(declared, bool) and declared >= 2
    return declared if valid else None


def zeroes_gradients(pl_module: LightningModule) -> bool:
    """Whether the loop clears the gradients before each backward by itself: automatic
    optimisation, with ``optimizer_zero_grad`` not overridden (a host read of two attributes)."""
    own = type(pl_module).optimizer_zero_grad is LightningModule.optimizer_zero_grad
    return bool(pl_module.automatic_optimization) and own


def current_learning_rate(trainer: Trainer) -> float | None:
    """The smallest learning rate of the first optimizer's parameter groups, as the optimizer
    holds it now (a host value, no sync); ``None`` without an optimizer."""
    optimizers = trainer.optimizers if trainer.state.fn == "fit" else []
    lrs = [g.get("lr") for g in optimizers[0].param_groups] if optimizers else []
    lrs = [float(lr) for lr in lrs if isinstance(lr, (int, float))]
    return min(lrs) if lrs else None


def over_ranks(trainer: Trainer, value: Tensor, op: str) -> Tensor:
    """``value`` reduced over the ranks with ``op`` (``"sum"``, ``"mean"``, ``"max"``, ``"min"``)
    through the strategy (one collective, every rank must call it at the same point), or
    ``value`` itself in a single process."""
    return trainer.strategy.reduce(value, reduce_op=op) if trainer.world_size > 1 else value


def logged_metric(trainer: Trainer, name: str) -> float | None:
    """The metric ``name`` as the module logged it (``trainer.callback_metrics``), averaged over
    the ranks so that every rank decides from the same number; ``None`` if it was not logged.

    Note: under DDP one collective, so every rank must call it at the same point, and whether
    ``name`` was logged must be the same on every rank (it is for ``self.log`` in a step method).
    """
    value = trainer.callback_metrics.get(name)
    if value is None:
        return None
    return float(over_ranks(trainer, torch.as_tensor(value, dtype=torch.float32).detach().reshape(()), "mean"))
