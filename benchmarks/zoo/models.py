"""The zoo's small models: classifiers on the digits (MLP, CNN, GRU and a post-LN transformer over
rows) and an RNN for the adding problem.

Every model logs ``train_loss``, ``val_loss`` (and ``val_acc`` for classifiers). Optimizers are
``"sgd"`` (with ``momentum``) or ``"adam"``.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

Optimizer = Literal["sgd", "adam"]


def _optimizer(params, name: Optimizer, lr: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


class Classifier(L.LightningModule):
    """Training and validation steps of the digit classifiers.

    ``loss="naive"`` computes the cross-entropy by hand as ``-log(softmax(logits)[y])``, as people
    write it when they want per-sample control: exact on ordinary batches, but a batch with logits
    far apart underflows a probability to 0 and the loss to ``inf`` (``F.cross_entropy`` works in
    log space and stays finite).
    """

    num_classes = 10

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hparams.get("loss", "ce") == "naive":
            probabilities = torch.softmax(logits, dim=-1)
            return -torch.log(probabilities.gather(1, y[:, None])).mean()
        return F.cross_entropy(logits, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _optimizer(self.parameters(), self.hparams.optimizer, self.hparams.lr, self.hparams.momentum)


class MLP(Classifier):
    """An MLP on flat 8x8 digits.

    Args:
        lr, optimizer, momentum: the optimizer.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
        bias_init: every hidden bias starts at this value (``-3``: every ReLU starts dead).
        weight_const: every hidden weight starts at this value (a constant, symmetric init).
        loss: ``"ce"`` or ``"naive"`` (see :class:`Classifier`).
    """

    def __init__(self, lr: float = 0.05, optimizer: Optimizer = "sgd", momentum: float = 0.9, hidden: int = 128,
                 depth: int = 2, activation: str = "relu", bias_init: float | None = None,
                 weight_const: float | None = None, loss: str = "ce") -> None:
        super().__init__()
        self.save_hyperparameters()
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[activation]
        layers: list[nn.Module] = []
        width = 64
        for _ in range(depth):
            linear = nn.Linear(width, hidden)
            if bias_init is not None:
                nn.init.constant_(linear.bias, bias_init)
            if weight_const is not None:
                nn.init.constant_(linear.weight, weight_const)
            layers += [linear, act()]
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class CNN(Classifier):
    """The demo's small digits CNN (two 3x3 convolutions, a pool, a 64-unit head)."""

    def __init__(self, lr: float = 0.05, optimizer: Optimizer = "sgd", momentum: float = 0.9) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class RowsGRU(Classifier):
    """A GRU that reads each 8x8 digit as a sequence of 8 rows, classified from its last state."""

    def __init__(self, lr: float = 3e-3, optimizer: Optimizer = "adam", momentum: float = 0.9,
                 hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gru = nn.GRU(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x.reshape(-1, 8, 8))  # [B, 8 rows, hidden]
        return self.head(out[:, -1])


class AddingRNN(L.LightningModule):
    """An Elman RNN (``nn.RNN``) regressing the adding problem's target from its last state (MSE).

    Args:
        lr, optimizer, momentum: the optimizer.
        hidden: state size.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        recurrent_init: ``"default"`` (torch's uniform) or ``"identity"`` (IRNN, Le et al. 2015:
            identity recurrent weights, zero recurrent bias; the usual init for ReLU RNNs).
    """

    def __init__(self, lr: float = 0.01, optimizer: Optimizer = "sgd", momentum: float = 0.9, hidden: int = 64,
                 nonlinearity: str = "relu", recurrent_init: str = "identity") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.rnn = nn.RNN(2, hidden, nonlinearity=nonlinearity, batch_first=True)
        if recurrent_init == "identity":
            with torch.no_grad():
                self.rnn.weight_hh_l0.copy_(torch.eye(hidden))
                self.rnn.bias_hh_l0.zero_()
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # [B, T, hidden]
        return self.head(out[:, -1])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _optimizer(self.parameters(), self.hparams.optimizer, self.hparams.lr, self.hparams.momentum)


class RowsTransformer(Classifier):
    """A post-LN transformer encoder (``norm_first=False``, as most tutorials write it) reading an 8x8
    digit as a sequence of 8 rows: linear embedding plus a learned position, the encoder, a mean over
    positions, a linear head. Adam; with ``cosine``, the user's ``CosineAnnealingLR`` over the whole
    run, stepped every optimizer step.

    Post-LN transformers are the textbook case for warmup (Liu et al. 2020; Xiong et al. 2020): in
    the first steps Adam's second moment rests on a few gradients, so every weight moves by about
    the full LR at once. ``nn.TransformerEncoder`` deep-copies its layer: every layer starts alike.
    """

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.98), d_model: int = 64, heads: int = 4,
                 layers: int = 4, ff: int = 128, cosine: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Linear(8, d_model)
        self.position = nn.Parameter(torch.randn(1, 8, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, 0.0, batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 8, 8)  # [B, 8 rows, 8 pixels]
        return self.head(self.encoder(self.embed(rows) + self.position).mean(dim=1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)  # no train_loss logged: the suite then watches the validation loss

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=self.hparams.betas)
        if not self.hparams.cosine:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
