"""Faults: NaN batches, persistent NaN, fp16 overflow, vanishing and exploding gradients, and an
exception inside the user's training_step."""

import json
import os
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision
from torch import nn

from lightning_convergence import GradientNormMonitor
from lightning_convergence.recorder import REPORT_FILENAME
from lightning_convergence.recorder.console import ConvergenceWarning
from tests.helpers.models import DigitsMLP, trainer_kwargs


def _fit(tmp_path, model, callbacks, **kwargs):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=False, **kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        trainer.fit(model)
    return trainer


def _report(path):
    with open(os.path.join(path, REPORT_FILENAME)) as handle:
        return json.load(handle)


def _kinds(report):
    return {(d["kind"], d["severity"]) for d in report["diagnoses"]}


def _weights(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_nan_batch_is_skipped_when_remediating(tmp_path):
    model = DigitsMLP(nan_at_step=7)
    trainer = _fit(tmp_path, model, [GradientNormMonitor(auto_remediate=True)])
    assert torch.isfinite(_weights(model)).all()
    report = _report(tmp_path)
    # One event (the NaN batch), one diagnosis: the loss is seen first, the gradients are a note naming it.
    assert {("nonfinite_loss", "critical"), ("nonfinite_gradients", "info")} <= _kinds(report)
    note = next(d for d in report["diagnoses"] if d["kind"] == "nonfinite_gradients")
    assert note["evidence"]["event_kind"] == "nonfinite_loss" and note["evidence"]["event_step"] == 7
    skips = [i for i in report["interventions"] if i["action"] == "skip_step"]
    assert [s["step"] for s in skips] == [7] and skips[0]["detail"]["nonfinite_values"] > 0
    assert trainer.global_step == 16  # the run went on


def test_skip_leaves_weights_and_optimizer_state_unchanged(tmp_path):
    snapshots = {}

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 7:
                snapshots["before"] = _weights(pl_module).clone()
                snapshots["momentum"] = [s["momentum_buffer"].clone() for s in
                                         trainer.optimizers[0].state.values()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 8 and "after" not in snapshots:
                snapshots["after"] = _weights(pl_module).clone()
                snapshots["momentum_after"] = [s["momentum_buffer"].clone() for s in
                                               trainer.optimizers[0].state.values()]

    _fit(tmp_path, DigitsMLP(nan_at_step=7), [GradientNormMonitor(auto_remediate=True), Snapshot()])
    assert torch.equal(snapshots["before"], snapshots["after"])
    for a, b in zip(snapshots["momentum"], snapshots["momentum_after"]):
        assert torch.equal(a, b)


def test_observe_only_diagnoses_but_does_not_touch_training(tmp_path):
    model = DigitsMLP(nan_at_step=7)
    _fit(tmp_path, model, [GradientNormMonitor()])
    assert not torch.isfinite(_weights(model)).all()  # the NaN went through, as without us
    report = _report(tmp_path)
    assert {("nonfinite_loss", "critical"), ("nonfinite_gradients", "info")} <= _kinds(report)  # one event
    assert report["interventions"] == []


def test_persistent_nan_stops_the_run_cleanly(tmp_path):
    model = DigitsMLP(nan_at_step=3, nan_steps=1000)
    trainer = _fit(tmp_path, model, [GradientNormMonitor(auto_remediate=True, max_consecutive_skips=4)])
    assert trainer.global_step == 7  # steps 3, 4, 5, 6 skipped; stopped after the 4th
    assert torch.isfinite(_weights(model)).all()
    report = _report(tmp_path)
    actions = [i["action"] for i in report["interventions"]]
    assert actions == ["skip_step"] * 4 + ["stop"]
    assert any("stopped" in d["message"] for d in report["diagnoses"])


def test_fp16_scaler_overflow_is_amp_overflow_and_not_skipped_by_us(tmp_path):
    class Overflow(DigitsMLP):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * 1e30 if self.global_step == 5 else loss  # inf gradients in fp16

    scaler = torch.amp.GradScaler("cpu")
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    _fit(tmp_path, Overflow(), [GradientNormMonitor(auto_remediate=True)], plugins=[plugin])
    report = _report(tmp_path)
    assert ("amp_overflow", "info") in _kinds(report)
    assert not any(k == "nonfinite_gradients" for k, _ in _kinds(report))
    assert report["interventions"] == []  # the scaler skipped the step, not us


def test_fp16_norm_is_unscaled(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    seen = []

    class Peek(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.append(torch.stack([p.grad.float().norm() for p in pl_module.parameters()]).norm().item())

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
    logger = CSVLogger(tmp_path, name="csv")
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=[GradientNormMonitor(log_every_n_steps=1), Peek()], plugins=[plugin],
                        **trainer_kwargs(tmp_path, logger=logger, max_steps=3))
    trainer.fit(DigitsMLP())
    logger.save()
    import csv

    rows = [r for r in csv.DictReader(open(os.path.join(logger.log_dir, "metrics.csv")))
            if r.get("convergence/grad_norm/total")]
    logged = [float(r["convergence/grad_norm/total"]) for r in rows]
    assert logged == pytest.approx(seen, rel=1e-3)  # the fp32 norm, not 65536 times it
    assert max(logged) < 100


def test_vanishing_gradients_in_a_deep_sigmoid_net(tmp_path):
    model = DigitsMLP(depth=10, hidden=32, activation=nn.Sigmoid, lr=0.01)
    _fit(tmp_path, model, [GradientNormMonitor(log_every_n_steps=4)], max_epochs=2)
    report = _report(tmp_path)
    vanishing = [d for d in report["diagnoses"] if d["kind"] == "vanishing_gradients"]
    assert vanishing and vanishing[0]["layer"] == "net.0"
    assert vanishing[0]["evidence"]["ratio"] < 1e-3


def test_gradient_spike_is_exploding_with_its_onset_step(tmp_path):
    class Spike(DigitsMLP):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * 1000 if self.global_step == 12 else loss

    _fit(tmp_path, Spike(), [GradientNormMonitor()], max_epochs=2)
    exploding = [d for d in _report(tmp_path)["diagnoses"] if d["kind"] == "exploding_gradients"]
    assert exploding and exploding[0]["step"] == 12
    assert exploding[0]["evidence"]["ratio"] > 100


def test_healthy_runs_raise_no_warnings(tmp_path):
    for optimizer, lr in (("sgd", 0.05), ("adam", 1e-3)):
        _fit(tmp_path, DigitsMLP(lr=lr, optimizer=optimizer, n=1024), [GradientNormMonitor()], max_epochs=4)
        report = _report(tmp_path)
        assert report["summary"]["healthy"], (optimizer, report["diagnoses"])


def test_exception_in_training_step_writes_report_and_removes_hooks(tmp_path):
    class Boom(DigitsMLP):
        def training_step(self, batch, batch_idx):
            if self.global_step == 6:
                raise RuntimeError("user bug at step 6")
            return super().training_step(batch, batch_idx)

    model = Boom(nan_at_step=2)
    monitor = GradientNormMonitor(auto_remediate=True)
    # Attach the forward-order hooks again by starting fresh: they must be gone after the fault.
    with pytest.raises(RuntimeError, match="user bug at step 6"):
        _fit(tmp_path, model, [monitor])
    report = _report(tmp_path)
    assert [i["step"] for i in report["interventions"]] == [2]
    # Flushed from the open window, as a note of the event the loss reported first.
    assert {("nonfinite_loss", "critical"), ("nonfinite_gradients", "info")} <= _kinds(report)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_exception_before_the_first_step_removes_forward_order_hooks(tmp_path):
    class Boom(DigitsMLP):
        def training_step(self, batch, batch_idx):
            self(batch[0])  # the forward-order hooks run here
            raise ValueError("fails in the first step")

    model = Boom()
    with pytest.raises(ValueError, match="fails in the first step"):
        _fit(tmp_path, model, [GradientNormMonitor()])
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert os.path.exists(os.path.join(tmp_path, REPORT_FILENAME))


def test_diagnoses_reach_tensorboard_text_and_nan_never_crashes_a_writer(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from tests.helpers.tensorboard import load_events

    logger = TensorBoardLogger(tmp_path, name="tb")
    # A NaN batch exactly on a logging step that also writes histograms.
    monitor = GradientNormMonitor(log_every_n_steps=5, histogram_every_n_steps=5)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        trainer.fit(DigitsMLP(nan_at_step=9))
    events = load_events(logger.log_dir)
    assert "convergence/diagnoses/text_summary" in events.Tags()["tensors"]
    texts = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("convergence/diagnoses/text_summary")]
    assert any("nonfinite_gradients" in t and "Try:" in t for t in texts)
    # The NaN step's scalars were dropped, not written as NaN.
    totals = {e.step: e.value for e in events.Scalars("convergence/grad_norm/total")}
    assert 9 not in totals and all(v == v for v in totals.values())
    assert "convergence/grad_nonfinite_steps" in events.Tags()["scalars"]
