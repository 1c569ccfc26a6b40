"""Optimisation modes: manual optimisation with two optimizers, sparse gradients, bf16."""

import json
import os

import lightning as L
import torch

from lightning_convergence import GradientNormMonitor
from lightning_convergence.recorder import REPORT_FILENAME
from tests.helpers.models import DigitsMLP, SparseEmbedding, TwoOptimizers, trainer_kwargs


def test_manual_optimisation_with_two_optimizers(tmp_path):
    monitor = GradientNormMonitor(log_every_n_steps=4)
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=False))
    trainer.fit(TwoOptimizers())
    assert trainer.global_step == 16  # 8 batches x 2 optimizer steps
    assert sorted(monitor._tracks) == [0, 1]
    assert monitor._tracks[0].layers == ["encoder"] and monitor._tracks[1].layers == ["head"]


def test_sparse_gradients_give_correct_norms(tmp_path):
    seen = []

    class Check(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grad = pl_module.embedding.weight.grad
            seen.append(grad.is_sparse)

    monitor = GradientNormMonitor(log_every_n_steps=2, histogram_every_n_steps=2)
    trainer = L.Trainer(callbacks=[monitor, Check()], **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(SparseEmbedding())
    assert all(seen) and trainer.global_step == 8
    report = json.load(open(os.path.join(trainer.log_dir, REPORT_FILENAME)))
    assert report["summary"]["healthy"]


def test_bf16_nan_batch_is_skipped(tmp_path):
    model = DigitsMLP(nan_at_step=4)
    trainer = L.Trainer(callbacks=[GradientNormMonitor(auto_remediate=True)],
                        **trainer_kwargs(tmp_path, logger=False, precision="bf16-mixed"))
    trainer.fit(model)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    report = json.load(open(os.path.join(tmp_path, REPORT_FILENAME)))
    assert [i["step"] for i in report["interventions"]] == [4]
