"""Small models on the digits data, each configurable to show one training failure."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F


class DigitsClassifier(L.LightningModule):
    """Training and validation steps shared by the demo's models: cross-entropy, SGD + momentum,
    and ``train_loss``, ``val_loss``, ``val_acc`` logged."""

    num_classes = 10

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


class DigitsCNN(DigitsClassifier):
    """A small CNN for 8x8 digits.

    Args:
        lr: learning rate (the ``lr_high`` fault sets it far too high).
        momentum: SGD momentum.
    """

    def __init__(self, lr: float = 0.05, momentum: float = 0.9) -> None:
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


class DigitsMLP(DigitsClassifier):
    """An MLP on flat 8x8 digits.

    Args:
        lr: learning rate.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        activation: ``"relu"`` or ``"sigmoid"`` (a deep sigmoid stack shows vanishing gradients).
        bias_init: if given, every hidden bias starts at this value (a large negative value
            starts every ReLU dead).
        momentum: SGD momentum.
    """

    def __init__(self, lr: float = 0.05, hidden: int = 128, depth: int = 2, activation: str = "relu",
                 bias_init: float | None = None, momentum: float = 0.9) -> None:
        super().__init__()
        self.save_hyperparameters()
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[activation]
        layers: list[nn.Module] = []
        width = 64
        for _ in range(depth):
            linear = nn.Linear(width, hidden)
            if bias_init is not None:
                nn.init.constant_(linear.bias, bias_init)
            layers += [linear, act()]
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


MODELS: dict[str, type[DigitsClassifier]] = {"cnn": DigitsCNN, "mlp": DigitsMLP}
