"""The model, data and runs of ``bench_warmup.py``: a post-LN transformer on digit rows, the variants, a recorder.

See ``bench_warmup.py``'s docstring for what is measured and why.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F

try:  # run as a script: benchmarks/ is on sys.path
    from _report import finite_mean
except ImportError:  # imported as benchmarks._warmup_model
    from benchmarks._report import finite_mean
from lightning_convergence import WarmupScheduler
from lightning_convergence.demo.data import DigitsDataModule

SMOOTH = 5  # steps in the moving mean used for the spike measure and the figure
FAILED_ACC = 0.5  # a seed "failed" below this final val acc (or with a NaN/Inf loss); chance is 0.1


@dataclass(frozen=True)
class Variant:
    warmup: Any  # WarmupScheduler(warmup_steps=...) or None; "N" means --warmup-steps
    cosine: bool  # the user's CosineAnnealingLR, stepped every optimizer step
    text: str
    lr_scale: float = 1.0  # times --lr
    reference: bool = False


def variants(warmup_steps: int) -> dict[str, Variant]:
    return {
        "none": Variant(None, False, "constant lr, no warmup"),
        f"linear {warmup_steps}": Variant(warmup_steps, False,
                                          f"constant lr, `WarmupScheduler(warmup_steps={warmup_steps})` (linear)"),
        "untuned": Variant("untuned", False, 'constant lr, `WarmupScheduler(warmup_steps="untuned")` '
                           "(linear over 2 / (1 - beta2) steps)"),
        "cosine": Variant(None, True, '`CosineAnnealingLR(T_max=total steps)`, `interval="step"`, no warmup'),
        "cosine+untuned": Variant("untuned", True, 'the same cosine schedule with `WarmupScheduler("untuned")` '
                                  "on top"),
        "none lr/10": Variant(None, False, "reference: constant lr / 10, no warmup", lr_scale=0.1, reference=True),
    }


class RowsTransformer(LightningModule):
    """A post-LN transformer encoder that reads an 8x8 digit as a sequence of 8 rows."""

    def __init__(self, lr: float, betas: tuple[float, float], d_model: int, heads: int, layers: int, ff: int,
                 dropout: float, cosine: bool) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Linear(8, d_model)
        self.position = nn.Parameter(torch.randn(1, 8, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 8, 8)
        return self.head(self.encoder(self.embed(rows) + self.position).mean(dim=1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=self.hparams.betas)
        if not self.hparams.cosine:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Recorder(Callback):
    """The training loss of every step, and the LR the optimizer used on every step.

    The LR hook is registered on the first training batch, after every callback's
    ``on_train_start`` (where WarmupScheduler attaches the shared LR control's hooks), so it runs
    after the control has multiplied ``param_group["lr"]`` by the warmup factor.
    """

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self._handle: Any = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._handle is None:
            self._handle = trainer.optimizers[0].register_step_pre_hook(
                lambda optimizer, args, kwargs: self.lrs.append(float(optimizer.param_groups[0]["lr"])))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()


@dataclass
class RunResult:
    variant: str
    seed: int
    val_loss: float
    val_acc: float
    losses: list[float]
    lrs: list[float]
    seconds: float

    @property
    def first_nonfinite(self) -> int | None:
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)

    @property
    def failed(self) -> bool:
        return self.first_nonfinite is not None or not self.val_acc >= FAILED_ACC

    @property
    def smoothed(self) -> list[float]:
        return smooth(self.losses, SMOOTH)

    @property
    def spike(self) -> tuple[float, int]:
        """The largest rise of the smoothed loss above its running minimum, and the step it peaked."""
        best, worst, at = math.inf, 0.0, -1
        for i, v in enumerate(self.smoothed):
            if not math.isfinite(v):
                continue
            if v - best > worst:
                worst, at = v - best, i
            best = min(best, v)
        return (math.inf, self.first_nonfinite) if self.first_nonfinite is not None else (worst, at)

    @property
    def best_loss(self) -> float:
        finite = [v for v in self.smoothed if math.isfinite(v)]
        return min(finite) if finite else math.nan

    @property
    def tail_loss(self) -> float:
        return finite_mean(self.losses[-20:]) if self.first_nonfinite is None else math.nan


def smooth(values: Sequence[float], width: int) -> list[float]:
    """Trailing moving mean; NaN/Inf in a window makes that point NaN."""
    out = []
    for i in range(len(values)):
        window = values[max(0, i - width + 1): i + 1]
        out.append(sum(window) / len(window) if all(math.isfinite(v) for v in window) else math.nan)
    return out


def run_one(name: str, variant: Variant, seed: int, args: argparse.Namespace, root: str) -> RunResult:
    L.seed_everything(seed, verbose=False)
    model = RowsTransformer(args.lr * variant.lr_scale, args.betas, args.d_model, args.heads, args.layers, args.ff,
                            args.dropout, variant.cosine)
    recorder = Recorder()
    callbacks: list[Callback] = [recorder]
    if variant.warmup is not None:
        callbacks.append(WarmupScheduler(warmup_steps=variant.warmup))
    directory = os.path.join(root, name.replace(" ", "_").replace("/", "_"), f"seed{seed}")
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False, default_root_dir=directory,
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    began = time.perf_counter()
    trainer.fit(model, DigitsDataModule(batch_size=args.batch_size, as_images=False, seed=seed))
    seconds = time.perf_counter() - began
    metrics = trainer.callback_metrics
    return RunResult(name, seed, float(metrics.get("val_loss", math.nan)), float(metrics.get("val_acc", math.nan)),
                     recorder.losses, recorder.lrs, seconds)
