"""The sweep's networks and the one LightningModule that trains them.

Seven architectures (:data:`ARCHITECTURES`): an MLP, an MLP with BatchNorm, a CNN, a residual CNN
with BatchNorm, a GRU and a post-LN transformer reading each 8x8 digit as 8 rows, and a regression
MLP on scikit-learn's bundled diabetes data. Three optimisers (:data:`OPTIMIZERS`): SGD, SGD with
momentum 0.9, AdamW.

:class:`SweepModule` can carry one implementation error (:data:`benchmarks.sweep.setups.ERRORS`),
each the way a user writes it: ``"stale_gradients"`` (manual optimisation, ``training_step``
returns nothing and never calls ``zero_grad``), ``"schedule_to_zero"`` (a ``LinearLR`` sized in
epochs, stepped every batch), ``"sqrt_at_zero"`` (a square root of ReLU outputs: its gradient at
exact zeros is infinite, times the ReLU's 0 gives NaN), ``"uint8_inputs"`` (the loader yields raw
0-255 bytes, ``forward`` casts them to float). The data's errors (unscaled targets, sorted
unshuffled data) live in ``data.py``.

Every module logs ``train_loss`` and ``val_loss`` (and ``val_acc`` for classifiers), and
``outcome``: the validation loss in the clean data's units (the regression target's standardised
units, whatever scale the loader gives it), which labels the run.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

OPTIMIZERS = ("sgd", "sgdm", "adamw")


class SqrtOfReLU(nn.Module):
    """``sqrt(relu(x))``: finite forward, NaN gradient wherever the ReLU output is exactly 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(F.relu(x))


def _act(sqrt_at_zero: bool) -> nn.Module:
    return SqrtOfReLU() if sqrt_at_zero else nn.ReLU()


def mlp(sqrt_at_zero: bool = False) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), _act(sqrt_at_zero), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def mlp_bn(sqrt_at_zero: bool = False) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.BatchNorm1d(128), _act(sqrt_at_zero),
                         nn.Linear(128, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))


def cnn(sqrt_at_zero: bool = False) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), _act(sqrt_at_zero), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
                         nn.Linear(64, 10))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def rescnn(sqrt_at_zero: bool = False) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), _act(sqrt_at_zero),
                         ResidualBlock(16), ResidualBlock(16), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 4, 10))


class Rows(nn.Module):
    """An 8x8 digit (flat or image) as a sequence of 8 rows: ``[B, 8, 8]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 8, 8)


class LastState(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(8, hidden, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0][:, -1]


def gru(sqrt_at_zero: bool = False) -> nn.Module:
    return nn.Sequential(Rows(), LastState(64), nn.Linear(64, 64), _act(sqrt_at_zero), nn.Linear(64, 10))


class PostLNEncoder(nn.Module):
    """Linear embedding of each row plus a learned position, 2 post-LN encoder layers, a mean over rows."""

    def __init__(self, d_model: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        self.position = nn.Parameter(torch.randn(1, 8, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, 4, 64, 0.0, batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(x) + self.position).mean(dim=1)


def transformer(sqrt_at_zero: bool = False) -> nn.Module:
    return nn.Sequential(Rows(), PostLNEncoder(), nn.Linear(32, 32), _act(sqrt_at_zero), nn.Linear(32, 10))


def regression(sqrt_at_zero: bool = False) -> nn.Module:
    return nn.Sequential(nn.Linear(10, 64), _act(sqrt_at_zero), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp, "mlp_bn": mlp_bn, "cnn": cnn, "rescnn": rescnn, "gru": gru, "transformer": transformer,
    "regression": regression,
}
"""Architecture name -> network factory (``sqrt_at_zero`` puts the error in the first activation)."""


class SweepModule(L.LightningModule):
    """One architecture, one optimiser at one learning rate, and at most one implementation error.

    Args:
        arch: a key of :data:`ARCHITECTURES`.
        optimizer: ``"sgd"``, ``"sgdm"`` (momentum 0.9) or ``"adamw"`` (weight decay 0.01).
        lr: the learning rate.
        error: ``None`` or one of the module's errors (see the module docstring).
        target_scale: the factor the loader multiplied the regression target by (``outcome``
            divides it out).
    """

    def __init__(self, arch: str, optimizer: str, lr: float, error: str | None = None,
                 target_scale: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = ARCHITECTURES[arch](sqrt_at_zero=error == "sqrt_at_zero")
        self.regression = arch == "regression"
        self.num_classes = None if self.regression else 10
        self.automatic_optimization = error != "stale_gradients"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.error == "uint8_inputs":
            x = x.float()  # raw 0-255 bytes, never divided by 255
        out = self.net(x)
        return out.squeeze(-1) if self.regression else out

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, y) if self.regression else F.cross_entropy(out, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train_loss", loss)
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers()
        self.manual_backward(loss)  # gradients add up: zero_grad is never called
        optimizer.step()
        return None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self(x)
        loss = self._loss(out, y)
        self.log("val_loss", loss)
        self.log("outcome", loss / self.hparams.target_scale ** 2)
        if not self.regression:
            self.log("val_acc", (out.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        name, lr = self.hparams.optimizer, self.hparams.lr
        if name == "adamw":
            optimizer = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=0.01)
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9 if name == "sgdm" else 0.0)
        if self.hparams.error != "schedule_to_zero":
            return optimizer
        # Sized for the number of epochs, stepped every batch: the LR is 0 from batch max_epochs on.
        epochs = max(1, int(self.trainer.max_epochs or 1))
        scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
