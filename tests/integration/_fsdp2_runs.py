"""Runs for tests/integration/test_fsdp2.py, each in a fresh interpreter: Lightning's
ModelParallelStrategy (and DDP, for comparison) launch their other rank by running this script
again, which a pytest process cannot be. Each rank writes what it saw to ``OUT/<run>_rank<r>.json``.

Usage: ``python -m tests.integration._fsdp2_runs RUN STRATEGY OUT`` with RUN in ``norms``,
``nan``, ``acting`` and STRATEGY in ``fsdp2``, ``ddp``; or RUN ``comms`` (under FSDP2) with
``observing``, ``acting`` or ``bare`` (no suite).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from torch import nn

from lightning_convergence import AutoClip, GradientNormMonitor, default_callbacks
from lightning_convergence.callbacks._context import run_context
from tests.helpers.models import DigitsMLP, trainer_kwargs


class Digits(DigitsMLP):
    """The digits MLP, sharded with FSDP2 ``fully_shard`` per Linear when the strategy offers a
    device mesh. ``nan_rank1``: NaN inputs on rank 1 only at optimizer steps 2 and 3. ``diverge``:
    rank 1's loss x1000 from step 6 (a fault one rank sees)."""

    def __init__(self, nan_rank1: bool = False, diverge: bool = False):
        super().__init__(shuffle=False, hidden=33)  # 33 rows: uneven shards on 2 ranks
        self.nan_rank1, self.diverge = nan_rank1, diverge

    def configure_model(self):
        mesh = getattr(self, "device_mesh", None)
        if mesh is None:
            return  # DDP
        from torch.distributed.fsdp import fully_shard

        for module in self.net:
            if isinstance(module, nn.Linear):
                fully_shard(module, mesh=mesh["data_parallel"])
        fully_shard(self.net, mesh=mesh["data_parallel"])

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.nan_rank1 and self.global_rank == 1 and self.global_step in (2, 3):
            x = x * float("nan")
        loss = nn.functional.cross_entropy(self(x), y)
        if self.diverge and self.global_rank == 1 and self.global_step >= 6:
            loss = loss * 1e3
        self.log("train_loss", loss)
        return loss


class Probe(L.Callback):
    """Per step: the shared pass's total and per-layer norms (cached: no extra collective) and
    AutoClip's coefficient; at the end, the full weights' checksum and every callback's records."""

    def __init__(self, out: str, run: str):
        self.out, self.run, self.steps = out, run, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        context = run_context(trainer)
        monitor = next((c for c in trainer.callbacks if isinstance(c, GradientNormMonitor)), None)
        if monitor is None:
            return
        params, names = context.parameters(pl_module, optimizer)
        sumsq, _ = context.gradient_statistics(trainer, pl_module, optimizer, monitor.backend, full=False)
        sumsq = torch.as_tensor(sumsq)  # DDP on the CPU: the host path's floats
        layers: dict[str, float] = {}
        for name, value in zip(names, sumsq.tolist()):
            layer = name.rsplit(".", 1)[0]
            layers[layer] = layers.get(layer, 0.0) + value
        clip = next((c for c in trainer.callbacks if isinstance(c, AutoClip)), None)
        coefficient = None
        if clip is not None and clip._last is not None:
            _, _, scale = clip._last  # this step's clip coefficient (None: not clipping)
            coefficient = 1.0 if scale is None else float(scale)
        self.steps.append({"step": trainer.global_step, "total": float(sumsq.sum().sqrt()),
                           "layers": {k: v ** 0.5 for k, v in layers.items()}, "clip": coefficient})

    def on_train_end(self, trainer, pl_module):
        # full_tensor() is a collective per parameter: every rank calls it, in the same order.
        weights = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in pl_module.parameters()]
        flat = torch.cat([w.detach().reshape(-1) for w in weights])
        records = {type(c).__name__ + (f":{c.mode}" if isinstance(c, AutoClip) else ""): c.records()
                   for c in trainer.callbacks if hasattr(c, "records")}
        result = {"steps": self.steps, "checksum": float(flat.double().sum()), "weights": flat.tolist(),
                  "finite": bool(torch.isfinite(flat).all()), "records": records, "global_step": trainer.global_step}
        with open(os.path.join(self.out, f"{self.run}_rank{trainer.global_rank}.json"), "w") as handle:
            json.dump(result, handle)


class CountComms(L.Callback):
    """Counts collectives per training batch with torch's CommDebugMode (batches 2 to 5)."""

    def __init__(self, out: str):
        self.out, self.counts, self._mode = out, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if 2 <= batch_idx <= 5:
            from torch.distributed.tensor.debug import CommDebugMode

            self._mode = CommDebugMode()
            self._mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            counts = {str(k): v for k, v in self._mode.get_comm_counts().items()}
            self.counts.append({"batch": batch_idx, "total": self._mode.get_total_counts(), "by_op": counts})
            self._mode = None

    def on_train_end(self, trainer, pl_module):
        with open(os.path.join(self.out, f"comms_rank{trainer.global_rank}.json"), "w") as handle:
            json.dump(self.counts, handle)


def main(run: str, strategy_name: str, out: str) -> None:
    L.seed_everything(0, verbose=False)
    if strategy_name == "fsdp2":
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(seconds=60))
    else:
        strategy = DDPStrategy(timeout=timedelta(seconds=60))
    tag = f"{run}_{strategy_name}"
    if run == "norms":  # the observing suite, the clipper at p=10 (clips most steps), then AGC at a
        # tight factor (clips most units: local rows under FSDP2); both in one launch
        callbacks = default_callbacks(log_every_n_steps=2) + [AutoClip(percentile=10, log_every_n_steps=2),
                                                              AutoClip(mode="agc", clip_factor=1e-3, log_every_n_steps=2)]
        model, steps = Digits(), dict(max_steps=6)
    elif run == "nan":
        callbacks, model, steps = default_callbacks(auto_remediate=True, log_every_n_steps=3), Digits(nan_rank1=True), \
            dict(max_steps=8)
    elif run == "acting":
        callbacks = default_callbacks(auto_remediate=True, log_every_n_steps=4, monitor=None)
        model, steps = Digits(diverge=True), dict(max_epochs=3)
    elif run == "comms":  # under FSDP2, with the suite (observing or acting) or without it ("bare")
        callbacks = [] if strategy_name == "bare" else default_callbacks(
            auto_remediate=strategy_name == "acting", log_every_n_steps=50)
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, timeout=timedelta(seconds=60))
        model, steps, tag = Digits(), dict(max_steps=6), f"comms_{strategy_name}"
        callbacks = callbacks + [CountComms(os.path.join(out, tag))]
        os.makedirs(os.path.join(out, tag), exist_ok=True)
    else:
        raise SystemExit(f"unknown run {run!r}")
    kwargs = trainer_kwargs(out, logger=False, devices=2, strategy=strategy, **steps)
    kwargs.pop("deterministic")
    trainer = L.Trainer(callbacks=callbacks + [Probe(out, tag)], **kwargs)
    trainer.fit(model)


if __name__ == "__main__":
    main(*sys.argv[1:4])
