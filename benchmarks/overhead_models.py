"""The three models of the overhead benchmark, their random data, and two reference callbacks.

- ``mlp``: 50 ``Linear(507, 507)`` layers with ReLU, He init: 100 parameter tensors, 12.9M
  parameters, batch 64, 507 classes.
- ``cnn``: a small ResNet-like net on 3x32x32 inputs: a 3x3 stem and four stages of basic blocks
  (widths 32, 64, 128, 256; two blocks in the last), BatchNorm, a ``nn.ReLU`` module per
  activation (so DeadNeuronTracker can hook it), global average pooling, 10 classes. 2.4M parameters.
- ``transformer``: a pre-LN causal language model: 4 blocks of ``nn.MultiheadAttention`` (d_model
  256, 4 heads) and an MLP (1024, ``nn.GELU``), vocabulary 1024, sequence 64. 3.7M parameters.

Every model trains with Adam (lr 1e-4) on fixed random data, cross-entropy, and logs nothing itself
(so the callbacks' logging is charged in full). :class:`FloorPass` reads every gradient once per
step, the least any per-step gradient statistic can cost; :class:`RecipeTask` is Lightning's
documented ``self.log_dict(grad_norm(self, norm_type=2))``. Nothing here imports
``lightning_convergence``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import grad_norm
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

MLP_WIDTH, MLP_DEPTH = 507, 50  # 50 x (507*507 + 507) = 12,877,800 parameters in 100 tensors
VOCAB, SEQ, D_MODEL = 1024, 64, 256


def mlp() -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(MLP_DEPTH):
        linear = nn.Linear(MLP_WIDTH, MLP_WIDTH)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")  # gradients keep their scale over 50 layers
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()] if i < MLP_DEPTH - 1 else [linear]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + self.shortcut(x))


def cnn() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    cin = 32
    for stage, (width, blocks) in enumerate(zip((32, 64, 128, 256), (1, 1, 1, 2))):
        for block in range(blocks):
            layers.append(BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


class PreLNBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D_MODEL), nn.LayerNorm(D_MODEL)
        self.attn = nn.MultiheadAttention(D_MODEL, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(D_MODEL, 1024), nn.GELU(), nn.Linear(1024, D_MODEL))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class CausalLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.position = nn.Parameter(torch.randn(SEQ, D_MODEL) * 0.02)
        self.blocks = nn.ModuleList(PreLNBlock() for _ in range(4))
        self.ln = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB)
        self.register_buffer("mask", torch.triu(torch.full((SEQ, SEQ), float("-inf")), 1), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.position  # [B, SEQ, D_MODEL]
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.ln(x))


def _tokens(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.randint(0, VOCAB, (n, SEQ), generator=g), torch.randint(0, VOCAB, (n, SEQ), generator=g)


# name -> (description, net, batch, data(n, generator) -> (x, y))
MODELS: dict[str, tuple[str, Callable[[], nn.Module], int, Callable[[int, torch.Generator], tuple[Tensor, Tensor]]]] = {
    "mlp": (f"MLP {MLP_DEPTH} x Linear({MLP_WIDTH}, {MLP_WIDTH}) + ReLU, He init", mlp, 64,
            lambda n, g: (torch.randn(n, MLP_WIDTH, generator=g), torch.randint(0, MLP_WIDTH, (n,), generator=g))),
    "cnn": ("ResNet-like CNN, widths (32, 64, 128, 256), BatchNorm, ReLU, 3x32x32 inputs, 10 classes", cnn, 32,
            lambda n, g: (torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))),
    "transformer": (f"pre-LN causal transformer, 4 layers, d_model {D_MODEL}, 4 heads, ff 1024 (GELU), vocab "
                    f"{VOCAB}, seq {SEQ}", CausalLM, 8, _tokens),
}


class Task(LightningModule):
    """One of the nets with cross-entropy (over every position for the language model) and Adam."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        out = self.net(x)
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-4)


class RecipeTask(Task):
    """The same with Lightning's documented gradient-norm recipe, timed per call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self.hook_seconds: list[float] = []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        start = time.perf_counter()
        self.log_dict(grad_norm(self, norm_type=2))
        self.hook_seconds.append(time.perf_counter() - start)


class FloorPass(Callback):
    """Reads every gradient once per optimizer step (``g.sum()``): the floor of any statistics pass."""

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        for param in pl_module.parameters():
            if param.grad is not None:
                param.grad.sum()


def make_task(model: str, recipe: bool = False) -> Task:
    torch.manual_seed(0)
    net = MODELS[model][1]()
    return RecipeTask(net) if recipe else Task(net)


def make_loader(model: str, steps: int) -> DataLoader:
    """Random inputs and labels for ``steps`` batches, the same for every fit of a model."""
    _, _, batch, data = MODELS[model]
    x, y = data(batch * steps, torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, num_workers=0)
