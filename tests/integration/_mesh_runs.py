"""Runs for tests/integration/test_mesh_sharding.py: tensor parallelism, HSDP and FSDP+TP under
Lightning's ModelParallelStrategy on gloo (CPU), each in a fresh interpreter (the strategy launches
its other ranks by running this script again). Each rank writes what it saw to
``OUT/<layout>_rank<r>.json``; the unsharded reference runs in the test's own process
(:func:`fit`) on the same global batch.

Usage: ``python -m tests.integration._mesh_runs LAYOUT[,LAYOUT] OUT`` with LAYOUT in

- ``tp``: 2 processes, a 1-D mesh of 2 (data_parallel_size=1, tensor_parallel_size=2): ``net.0``
  ColwiseParallel (``Shard(0)``), ``net.2`` RowwiseParallel (weight ``Shard(1)``, bias
  ``Replicate``), ``net.4`` left a plain tensor. Every rank sees the whole batch.
- ``hsdp``: 4 processes, data_parallel_size=4; ``configure_model`` builds its own 2-D mesh
  (replicate=2, shard=2) and calls ``fully_shard(module, mesh=mesh_2d)``: placements
  ``(Replicate(), Shard(0))``. Each rank sees a quarter of the global batch.
- ``fsdp_tp``: 4 processes, a (data_parallel=2, tensor_parallel=2) mesh: the ``tp`` plan on the
  tensor-parallel sub-mesh, then ``fully_shard`` on the data-parallel one (2-D placements; the
  row-parallel bias is ``Replicate`` on the tensor-parallel dimension, the plain head a 1-D
  DTensor on the data-parallel sub-mesh). Each data-parallel pair sees half the global batch.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import lightning as L
import torch
from lightning.pytorch.loggers.logger import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_convergence import GradientNormMonitor, tags
from lightning_convergence.stats.sharding import copies
from tests.helpers.models import digits_tensors, trainer_kwargs
from tests.integration._fsdp2_runs import Probe

LAYOUTS = {  # processes, data_parallel_size, tensor_parallel_size
    "tp": (2, 1, 2),
    "hsdp": (4, 4, 1),
    "fsdp_tp": (4, 2, 2),
}
BATCH, N, STEPS, HIDDEN = 8, 128, 4, 16  # per data-parallel rank; N covers the 4 steps of any layout


class MeshMLP(L.LightningModule):
    """64 -> HIDDEN -> HIDDEN -> 10, SGD with momentum. Lightning's DistributedSampler hands rank
    ``r`` of ``R`` data-parallel ranks the rows ``perm[r::R]`` of one seeded permutation, so batch
    ``k`` of all ranks together is batch ``k`` of one process that reads ``perm`` in order with an
    ``R`` times larger batch (the mean loss of equal-sized parts is the mean of their means)."""

    def __init__(self, layout: str | None, batch_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                                 nn.Linear(HIDDEN, 10))
        self.layout, self.batch_size = layout, batch_size

    def configure_model(self):
        if self.layout is None:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        mesh = self.device_mesh
        if self.layout in ("tp", "fsdp_tp"):
            parallelize_module(self.net, mesh["tensor_parallel"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
        if self.layout == "hsdp":
            shard_mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
        elif self.layout == "fsdp_tp":
            shard_mesh = mesh["data_parallel"]
        else:
            return
        for module in self.net:
            if isinstance(module, nn.Linear):
                fully_shard(module, mesh=shard_mesh)
        fully_shard(self.net, mesh=shard_mesh)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        x, y = digits_tensors(N)
        if self.layout is not None:  # Lightning puts in a DistributedSampler over the data-parallel ranks
            return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=False)
        # One process: the order that sampler shuffles into (it always shuffles training data, with
        # seed PL_GLOBAL_SEED = 0, epoch 0), so batch k holds the rows of every rank's batch k.
        order = torch.randperm(N, generator=torch.Generator().manual_seed(0)).tolist()
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, sampler=order)


class MemoryLogger(Logger):
    """Keeps what the suite logs (rank 0 only, as every Lightning logger): ``[(step, {tag: value})]``."""

    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self):
        return "memory"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        suite = {k: float(v) for k, v in metrics.items() if tags.is_suite_tag(k)}
        if suite:
            self.logged.append((step, suite))


class Layout(L.Callback):
    """Each parameter's placements, mesh shape and ``copies`` as the suite weights it."""

    def __init__(self):
        self.params: dict[str, dict] = {}

    def on_train_start(self, trainer, pl_module):
        for name, p in pl_module.named_parameters():
            mesh = getattr(p, "device_mesh", None)
            self.params[name] = {
                "placements": [repr(x) for x in p.placements] if mesh is not None else None,
                "mesh": list(mesh.shape) if mesh is not None else None,
                "copies": copies(p, trainer.world_size)}


def fit(layout: str | None, out: str, batch_size: int) -> dict:
    """One fit of :class:`MeshMLP` with GradientNormMonitor; what this rank saw."""
    L.seed_everything(0, verbose=False)
    logger, shape = MemoryLogger(), Layout()
    monitor = GradientNormMonitor(log_every_n_steps=1, histogram_every_n_steps=None)
    tag = layout or "single"
    probe = Probe(out, tag)
    extra: dict = {}
    if layout is not None:
        from lightning.pytorch.strategies import ModelParallelStrategy

        processes, dp, tp = LAYOUTS[layout]
        extra = dict(devices=processes, strategy=ModelParallelStrategy(
            data_parallel_size=dp, tensor_parallel_size=tp, timeout=timedelta(seconds=60)))
    kwargs = trainer_kwargs(out, logger=logger, max_steps=STEPS, log_every_n_steps=1, **extra)
    kwargs.pop("deterministic")
    trainer = L.Trainer(callbacks=[monitor, probe, shape], **kwargs)
    trainer.fit(MeshMLP(layout, batch_size))
    with open(os.path.join(out, f"{tag}_rank{trainer.global_rank}.json")) as handle:
        result = json.load(handle)
    result.update(logged=logger.logged, layout=shape.params, world_size=trainer.world_size)
    with open(os.path.join(out, f"{tag}_rank{trainer.global_rank}.json"), "w") as handle:
        json.dump(result, handle)
    return result


if __name__ == "__main__":
    # Layouts with the same number of processes run one after the other in the same processes: the
    # second fit reuses the process group (one launch, so the interpreters start once).
    layouts, out = sys.argv[1].split(","), sys.argv[2]
    assert len({LAYOUTS[layout][0] for layout in layouts}) == 1, layouts
    for layout in layouts:
        fit(layout, out, BATCH)
