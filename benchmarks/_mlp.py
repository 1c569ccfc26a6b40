"""The model of ``bench_gradient_monitor.py``: a deep MLP, its data, and the floor and recipe variants.

An MLP of 50 ``Linear(507, 507)`` layers: 100 parameter tensors, 12,877,800 parameters, Adam,
batch 64, cross-entropy on random data. Nothing here imports ``lightning_convergence``.
"""

from __future__ import annotations

import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import grad_norm
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

WIDTH = 507  # 50 x (507*507 + 507) = 12,877,800 parameters in 100 tensors
DEPTH = 50
BATCH = 64


class MLP(LightningModule):
    """50 Linear(507, 507) layers with ReLU between them; cross-entropy over 507 classes.

    Args:
        init: ``"he"`` (Kaiming-normal weights, zero biases: gradients keep their scale through
            the 50 layers) or ``"default"`` (PyTorch's init: the first layers' gradients vanish).
    """

    def __init__(self, init: str = "he") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(DEPTH):
            linear = nn.Linear(WIDTH, WIDTH)
            if init == "he":
                nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
                nn.init.zeros_(linear.bias)
            layers.append(linear)
            if i < DEPTH - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-4)


class FloorPass(Callback):
    """Reads every gradient once per optimizer step (``g.sum()``): the floor of any statistics pass."""

    def __init__(self) -> None:
        self.hook_seconds: list[float] = []

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        start = time.perf_counter()
        for param in pl_module.parameters():
            if param.grad is not None:
                param.grad.sum()
        self.hook_seconds.append(time.perf_counter() - start)


class RecipeMLP(MLP):
    """The same model with Lightning's documented gradient-norm recipe (timed per call)."""

    def __init__(self, init: str = "he") -> None:
        super().__init__(init)
        self.hook_seconds: list[float] = []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        start = time.perf_counter()
        self.log_dict(grad_norm(self, norm_type=2))
        self.hook_seconds.append(time.perf_counter() - start)


def make_loader(max_steps: int) -> DataLoader:
    """Random inputs and labels for ``max_steps`` batches, the same for every fit."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * max_steps, WIDTH, generator=generator)
    y = torch.randint(0, WIDTH, (BATCH * max_steps,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False, num_workers=0)


def gradient_like_tensors() -> list[Tensor]:
    """100 fp32 tensors shaped like the MLP's gradients (for the statistics pass timed alone)."""
    generator = torch.Generator().manual_seed(1)
    tensors: list[Tensor] = []
    for _ in range(DEPTH):
        tensors.append(torch.randn(WIDTH, WIDTH, generator=generator))
        tensors.append(torch.randn(WIDTH, generator=generator))
    return tensors
