"""PlateauAdvisor's rollback point on disk: written and read through the Trainer's strategy.

Used when the in-memory snapshot of the model and optimizers would exceed the advisor's
``max_snapshot_bytes`` on a rank (see :mod:`lightning_convergence.remedies.rollback_point`).
The checkpoint is a full Lightning checkpoint, written by ``trainer.save_checkpoint``, so every
strategy writes it its own way (rank 0's file under DDP, each rank's shards under FSDP2), and
read back with the strategy's ``load_checkpoint``, ``load_model_state_dict`` and
``load_optimizer_state_dict``, as Lightning resumes a fit. One file per advisor, overwritten by
each new steady state.
"""

from __future__ import annotations

import hashlib
import os

from lightning.pytorch import Trainer

ROLLBACK_DIR = "rollback"


def rollback_path(trainer: Trainer, owner: str) -> str:
    """Where ``owner`` (a callback's ``state_key``) keeps its rollback checkpoint.

    Note: ``trainer.log_dir`` broadcasts from rank 0 (a collective): every rank calls this at
    the same step, as the recovery policy's actions come from reduced values.
    """
    digest = hashlib.sha1(owner.encode()).hexdigest()[:8]  # a state_key is not a safe file name
    return os.path.join(trainer.log_dir or trainer.default_root_dir, ROLLBACK_DIR, f"plateau_advisor_{digest}.ckpt")


def save_rollback_checkpoint(trainer: Trainer, path: str) -> str | None:
    """Write the Trainer's state to ``path``; returns it, or ``None`` when the write failed.

    Args:
        trainer: the running Trainer (every rank calls this: strategies save collectively).
        path: the file (a folder under FSDP2's distributed checkpoint).

    Raises:
        Nothing: an ``OSError`` (disk full, no permission) is answered with ``None``, and the
            caller says there is no rollback point.
    """
    try:
        trainer.save_checkpoint(path)
    except OSError:
        return None
    return path


def load_rollback_checkpoint(trainer: Trainer, path: str) -> None:
    """Load the weights and optimizer state of the checkpoint at ``path``, as a resume does.

    Args:
        trainer: the running Trainer.
        path: written by :func:`save_rollback_checkpoint`.
    """
    checkpoint = trainer.strategy.load_checkpoint(path, weights_only=False)  # our own file, with callback states
    trainer.strategy.load_model_state_dict(checkpoint, strict=True)
    trainer.strategy.load_optimizer_state_dict(checkpoint)
