"""The in-run range test's exact restore under mixed precision, manual optimisation and two
optimizers (the probe multiplies every optimizer's rate through the shared LR control)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from lightning_convergence.callbacks._context import run_context
from lightning_convergence.remedies.lr_range_test import RangeTestPlan
from tests.callbacks.test_lr_range_test import NormDropMLP, Probe, _same
from tests.helpers.models import TwoOptimizers, trainer_kwargs


class ManualNormDrop(NormDropMLP):
    """NormDropMLP under manual optimisation, its StepLR stepped by hand each batch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        loss = nn.functional.cross_entropy(self(x), y)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        scheduler.step()
        self.log("train_loss", loss)


class LoggedTwoOptimizers(TwoOptimizers):
    def training_step(self, batch, batch_idx):
        x, y = batch
        super().training_step(batch, batch_idx)
        self.log("train_loss", nn.functional.cross_entropy(self.head(torch.relu(self.encoder(x))), y))


def probe_and_compare(tmp_path, model, at=3, **overrides):
    L.seed_everything(0, verbose=False)
    probe = Probe(at=at, plan=RangeTestPlan(1.0, 1e4, num_steps=6))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=False, max_epochs=2, **overrides), callbacks=[probe])
    trainer.fit(model)
    assert probe.result is not None and len(probe.result.lrs) >= 5
    assert probe.changed_during
    assert _same(probe.before["model"], probe.after["model"])
    assert _same(probe.before["torch_rng"], probe.after["torch_rng"])
    assert not run_context(trainer).probing
    return probe, trainer


def test_exact_restore_under_bf16_mixed_precision(tmp_path):
    probe, _ = probe_and_compare(tmp_path, NormDropMLP(lr=0.01), precision="bf16-mixed")
    assert _same(probe.before["optimizer"], probe.after["optimizer"])


def test_exact_restore_under_manual_optimisation(tmp_path):
    probe, _ = probe_and_compare(tmp_path, ManualNormDrop(lr=0.01))
    assert _same(probe.before["optimizer"], probe.after["optimizer"])
    assert _same(probe.before["schedulers"], probe.after["schedulers"])


def test_exact_restore_with_two_optimizers(tmp_path):
    probe, trainer = probe_and_compare(tmp_path, LoggedTwoOptimizers(), at=4)  # two optimizer steps per batch
    assert all(not c._owners for c in run_context(trainer)._lr_controls.values())
