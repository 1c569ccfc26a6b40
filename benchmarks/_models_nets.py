"""The three models of ``bench_overhead_models.py``, their random data, and the recipe variant.

- ``mlp``: the overhead benchmark's MLP (``_mlp.py``): 50 ``Linear(507, 507)`` layers with ReLU,
  He init, 100 parameter tensors, 12.9M parameters, batch 64, 507 classes.
- ``cnn``: a small ResNet-like net on 3x32x32 inputs: a 3x3 stem and four stages of basic blocks
  (conv-BN-ReLU-conv-BN, identity or 1x1-conv shortcut, ReLU after the sum), widths 32, 64, 128,
  256, one block per stage (two in the last), global average pooling, 10 classes; every ReLU is
  its own ``nn.ReLU`` module (so DeadNeuronTracker can hook it). About 2.4M parameters.
- ``transformer``: a pre-LN causal language model: token and learned position embeddings, 4 blocks
  of ``nn.MultiheadAttention`` (d_model 256, 4 heads) and an MLP (1024, ``nn.GELU`` module),
  final LayerNorm and an untied output layer over a vocabulary of 1024, sequence 64. About 3.7M
  parameters.

Every model trains with Adam (lr 1e-4) on fixed random data (inputs and labels drawn once per fit
from a seeded generator), cross-entropy loss, nothing logged by the model itself (so the bare
Trainer writes nothing per step; the callbacks' own logging is part of what they cost).
Nothing here imports ``lightning_convergence``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import grad_norm
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

try:  # run as a script: benchmarks/ is on sys.path
    from _mlp import BATCH as MLP_BATCH
    from _mlp import DEPTH as MLP_DEPTH
    from _mlp import MLP
    from _mlp import WIDTH as MLP_WIDTH
except ImportError:  # imported as benchmarks._models_nets
    from benchmarks._mlp import BATCH as MLP_BATCH
    from benchmarks._mlp import DEPTH as MLP_DEPTH
    from benchmarks._mlp import MLP
    from benchmarks._mlp import WIDTH as MLP_WIDTH

CNN_BATCH = 32
CNN_WIDTHS = (32, 64, 128, 256)
CNN_BLOCKS = (1, 1, 1, 2)
CNN_CLASSES = 10

TF_BATCH = 8
TF_SEQ = 64
TF_VOCAB = 1024
TF_D_MODEL = 256
TF_HEADS = 4
TF_FF = 1024
TF_LAYERS = 4

LR = 1e-4


# --------------------------------------------------------------------------------- CNN


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet_like() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, CNN_WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(CNN_WIDTHS[0]),
                               nn.ReLU()]
    cin = CNN_WIDTHS[0]
    for stage, (width, blocks) in enumerate(zip(CNN_WIDTHS, CNN_BLOCKS)):
        for block in range(blocks):
            layers.append(BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CNN_CLASSES)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------- transformer


class PreLNBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(TF_D_MODEL)
        self.attn = nn.MultiheadAttention(TF_D_MODEL, TF_HEADS, batch_first=True)
        self.ln2 = nn.LayerNorm(TF_D_MODEL)
        self.mlp = nn.Sequential(nn.Linear(TF_D_MODEL, TF_FF), nn.GELU(), nn.Linear(TF_FF, TF_D_MODEL))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class CausalLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(TF_VOCAB, TF_D_MODEL)
        self.position = nn.Parameter(torch.randn(TF_SEQ, TF_D_MODEL) * 0.02)
        self.blocks = nn.ModuleList(PreLNBlock() for _ in range(TF_LAYERS))
        self.ln = nn.LayerNorm(TF_D_MODEL)
        self.head = nn.Linear(TF_D_MODEL, TF_VOCAB)
        self.register_buffer("mask", torch.triu(torch.full((TF_SEQ, TF_SEQ), float("-inf")), 1), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.position
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.ln(x))


# --------------------------------------------------------------------------------- Lightning


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
        return torch.optim.Adam(self.parameters(), lr=LR)


class RecipeTask(Task):
    """The same with Lightning's documented gradient-norm recipe, timed per call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self.hook_seconds: list[float] = []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        start = time.perf_counter()
        self.log_dict(grad_norm(self, norm_type=2))
        self.hook_seconds.append(time.perf_counter() - start)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    batch: int
    build: Callable[[], nn.Module]
    data: Callable[[int, torch.Generator], tuple[Tensor, Tensor]]  # (batches, generator) -> (x, y)


def _mlp_net() -> nn.Module:
    return MLP("he").net


def _mlp_data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.randn(n, MLP_WIDTH, generator=g), torch.randint(0, MLP_WIDTH, (n,), generator=g)


def _cnn_data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, CNN_CLASSES, (n,), generator=g)


def _tf_data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    return (torch.randint(0, TF_VOCAB, (n, TF_SEQ), generator=g),
            torch.randint(0, TF_VOCAB, (n, TF_SEQ), generator=g))


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", f"MLP {MLP_DEPTH} x Linear({MLP_WIDTH}, {MLP_WIDTH}) + ReLU, He init (_mlp.py)",
                     MLP_BATCH, _mlp_net, _mlp_data),
    "cnn": ModelSpec("cnn", f"ResNet-like CNN, widths {CNN_WIDTHS}, blocks {CNN_BLOCKS}, BatchNorm, ReLU, "
                            f"3x32x32 inputs, {CNN_CLASSES} classes", CNN_BATCH, resnet_like, _cnn_data),
    "transformer": ModelSpec("transformer", f"pre-LN causal transformer, {TF_LAYERS} layers, d_model {TF_D_MODEL}, "
                                            f"{TF_HEADS} heads, ff {TF_FF} (GELU), vocab {TF_VOCAB}, seq {TF_SEQ}",
                             TF_BATCH, CausalLM, _tf_data),
}


def make_task(model: str, recipe: bool = False) -> Task:
    torch.manual_seed(0)
    net = MODELS[model].build()
    return RecipeTask(net) if recipe else Task(net)


def make_loader(model: str, max_steps: int) -> DataLoader:
    """Random inputs and labels for ``max_steps`` batches, the same for every fit of a model."""
    spec = MODELS[model]
    x, y = spec.data(spec.batch * max_steps, torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, y), batch_size=spec.batch, shuffle=False, num_workers=0)


def parameter_summary(task: Task) -> dict[str, int]:
    params = list(task.parameters())
    return {"tensors": len(params), "parameters": sum(p.numel() for p in params),
            "bytes": sum(p.numel() * p.element_size() for p in params)}
