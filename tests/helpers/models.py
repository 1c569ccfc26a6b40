"""Small real models and data for the tests: digits from scikit-learn, no download."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def digits_tensors(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data[:n], dtype=torch.float32) / 16.0
    y = torch.tensor(data.target[:n], dtype=torch.long)
    return x, y


class DigitsMLP(L.LightningModule):
    """An MLP on 8x8 digits. ``nan_at_step`` makes one batch's input NaN (a fault)."""

    def __init__(self, lr: float = 0.05, hidden: int = 32, depth: int = 2, activation: type[nn.Module] = nn.ReLU,
                 nan_at_step: int | None = None, nan_steps: int = 1, dropout: float = 0.0,
                 batch_size: int = 32, n: int = 512, optimizer: str = "sgd", val: bool = True,
                 shuffle: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        width = 64
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)
        self.lr, self.nan_at_step, self.nan_steps = lr, nan_at_step, nan_steps
        self.batch_size, self.n, self.optimizer_name, self.val = batch_size, n, optimizer, val
        self.shuffle = shuffle

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.nan_at_step is not None and self.nan_at_step <= self.global_step < self.nan_at_step + self.nan_steps:
            x = x * float("nan")
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self):
        x, y = digits_tensors(self.n)
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=self.shuffle)

    def val_dataloader(self):
        if not self.val:
            return []
        x, y = digits_tensors(self.n)
        return DataLoader(TensorDataset(x[:128], y[:128]), batch_size=64)


def trainer_kwargs(tmp_path, **overrides):
    kwargs = dict(default_root_dir=tmp_path, max_epochs=1, accelerator="cpu", devices=1,
                  enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                  log_every_n_steps=5, deterministic=True)
    kwargs.update(overrides)
    return kwargs


class TwoOptimizers(L.LightningModule):
    """Manual optimisation, GAN-style: two sub-networks, two optimizers, two steps per batch."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.encoder = nn.Linear(64, 16)
        self.head = nn.Linear(16, 10)

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt_encoder, opt_head = self.optimizers()
        for optimizer in (opt_encoder, opt_head):
            loss = nn.functional.cross_entropy(self.head(torch.relu(self.encoder(x))), y)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()

    def configure_optimizers(self):
        return (torch.optim.SGD(self.encoder.parameters(), lr=0.1),
                torch.optim.Adam(self.head.parameters(), lr=1e-3))

    def train_dataloader(self):
        return DataLoader(TensorDataset(*digits_tensors(256)), batch_size=32)


class SparseEmbedding(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(100, 8, sparse=True)
        self.head = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        tokens, y = batch
        return nn.functional.cross_entropy(self.head(self.embedding(tokens).mean(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, 100, (128, 5), generator=generator)
        return DataLoader(TensorDataset(tokens, tokens[:, 0] % 2), batch_size=16)
