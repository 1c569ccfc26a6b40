"""Small modules with the bugs the preflight check must name at step 0, and the digits loaders
they train on (scikit-learn's digits: no download)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers.models import digits_tensors


def digits_loader(images: bool = False, shuffle: bool = True, sort_by_class: bool = False,
                  mismatched_labels: bool = False, regression_scale: float | None = None,
                  batch_size: int = 32, n: int = 1024) -> DataLoader:
    """Digits as ``[N, 64]`` (or ``[N, 1, 8, 8]``) in [0, 1] with labels ``0..9``; the faults:
    sorted by class, labels permuted apart from their inputs, or a regression target (the label
    times ``regression_scale``)."""
    x, y = digits_tensors(n)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    if sort_by_class:
        order = torch.argsort(y, stable=True)
        x, y = x[order], y[order]
    if mismatched_labels:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    target = y if regression_scale is None else (y.float() * regression_scale)[:, None]
    return DataLoader(TensorDataset(x, target), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(0) if shuffle else None)


class Digits(L.LightningModule):
    """An MLP (or a given network) on digits with cross-entropy; ``loader`` gives the data."""

    def __init__(self, net: nn.Module | None = None, lr: float = 0.05, optimizer: str = "sgd",
                 loader: dict | None = None) -> None:
        super().__init__()
        self.net = net or nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.lr, self.optimizer_name, self.loader = lr, optimizer, loader or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self):
        return digits_loader(**self.loader)


class SoftmaxBeforeCrossEntropy(Digits):
    """The outputs go through a softmax, and ``F.cross_entropy`` applies another."""

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


class GradientsNeverZeroed(Digits):
    """Manual optimisation that never calls ``zero_grad``: each step adds onto the last."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.optimizers()
        loss = self.loss(self(x), y)
        self.manual_backward(loss)
        optimizer.step()
        self.log("train_loss", loss)


class FrozenEncoder(Digits):
    """The encoder runs under ``torch.no_grad()``: only the head trains."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.encoder = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)
        del self.net

    def forward(self, x):
        with torch.no_grad():
            features = self.encoder(x)
        return self.head(features)


class ScaledRegression(Digits):
    """Regresses the label times ``loader['regression_scale']`` with MSE."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))

    def loss(self, out, y):
        return F.mse_loss(out, y)


class BatchNormDropout(Digits):
    """A healthy MLP with BatchNorm and dropout (random state and running statistics to restore)."""

    def __init__(self, **kwargs) -> None:
        net = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))
        super().__init__(net=net, **kwargs)
