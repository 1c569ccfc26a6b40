"""Optimisation modes: manual optimisation with two optimizers, sparse gradients, bf16."""

import json
import math
import os

import lightning as L
import pytest
import torch

from lightning_convergence import GradientNormMonitor, tags
from lightning_convergence.recorder import REPORT_FILENAME
from tests.helpers.models import DigitsMLP, SparseEmbedding, TwoOptimizers, trainer_kwargs
from tests.helpers.tensorboard import load_events


def test_manual_optimisation_with_two_optimizers(tmp_path):
    monitor = GradientNormMonitor(log_every_n_steps=4)
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=False))
    trainer.fit(TwoOptimizers())
    assert trainer.global_step == 16  # 8 batches x 2 optimizer steps
    assert sorted(monitor._tracks) == [0, 1]
    assert monitor._tracks[0].layers == ["encoder"] and monitor._tracks[1].layers == ["head"]


def test_sparse_gradients_give_the_norms_of_the_dense_gradients(tmp_path):
    # The reference: each layer's gradients made dense, norms in float64. An uncoalesced sparse
    # gradient (a token seen twice in a batch) holds duplicate indices, so the norm of its raw
    # values is not the gradient's norm: the test fails if the statistics skip the coalesce.
    expected, duplicates = {}, []

    class Reference(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grad = pl_module.embedding.weight.grad
            assert grad.is_sparse
            duplicates.append(grad._nnz() > grad.coalesce()._nnz())
            layers = {"embedding": [grad], "head": [p.grad for p in pl_module.head.parameters()]}
            expected[trainer.global_step] = {
                name: math.sqrt(sum(float(g.to_dense().double().square().sum()) for g in grads))
                for name, grads in layers.items()}

    monitor = GradientNormMonitor(log_every_n_steps=2, histogram_every_n_steps=2)
    trainer = L.Trainer(callbacks=[monitor, Reference()], **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(SparseEmbedding())
    assert trainer.global_step == 8 and any(duplicates)
    events = load_events(trainer.log_dir)
    for layer in ("embedding", "head"):
        logged = {e.step: e.value for e in events.Scalars(tags.grad_norm(layer))}
        assert len(logged) == 4, logged
        for step, value in logged.items():
            assert value == pytest.approx(expected[step][layer], rel=1e-5), (layer, step)
    total = {e.step: e.value for e in events.Scalars(tags.GRAD_NORM_TOTAL)}
    assert sorted(total) == sorted(expected)
    for step, value in total.items():
        assert value == pytest.approx(math.hypot(*expected[step].values()), rel=1e-5), step
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


def test_unreadable_sharding_is_said_once_and_nothing_is_measured(tmp_path):
    """Parameters flattened by FSDP1 (torch marks them ``_fsdp_flattened``): their rank-local pieces
    would give wrong norms, so the monitor says what works instead and measures nothing, without
    stopping the user's run."""
    import warnings as _warnings

    model = DigitsMLP()
    model.net[0].weight._fsdp_flattened = True  # what FSDP1 sets on its flat views
    monitor = GradientNormMonitor(log_every_n_steps=2)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=False, max_steps=4))
        trainer.fit(model)
    assert trainer.global_step == 4
    said = [str(w.message) for w in caught if "not measuring gradients" in str(w.message)]
    assert len(said) == 1 and "FSDP1" in said[0] and "fully_shard" in said[0]
    assert monitor.records()["diagnoses"] == [] and not monitor._tracks
