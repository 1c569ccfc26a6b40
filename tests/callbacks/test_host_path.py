"""The host path (per-step bookkeeping on Python floats, for gradients on the CPU) against the
device path (0-d tensors, the path an accelerator takes), from ``Trainer.fit`` down: the same
run gives the same report, the same interventions at the same steps, the same logged scalars
(read back from TensorBoard's event files) and the same weights."""

import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lightning_convergence.stats.host
from lightning_convergence import AutoClip, GradientNormMonitor, tags
from lightning_convergence.recorder import REPORT_FILENAME
from tests.callbacks.test_autoclip import Spiky
from tests.helpers.models import trainer_kwargs


class SpikyWithNaN(Spiky):
    """Gradient spikes at steps 20, 21 and 35, and a NaN loss at step 40 (skipped)."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == 40 else loss


def _fit(path, host_path: bool, mode: str, monkeypatch):
    monkeypatch.setattr(lightning_convergence.stats.host, "HOST_PATH_ON_CPU", host_path)
    L.seed_everything(0, verbose=False)
    callbacks = [GradientNormMonitor(log_every_n_steps=10, auto_remediate=True),
                 AutoClip(mode=mode, log_every_n_steps=10, clip_warmup_steps=10 if mode == "zscore" else None)]
    model = SpikyWithNaN()
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(path, max_epochs=3, logger=TensorBoardLogger(path)))
    trainer.fit(model)
    report = json.load(open(os.path.join(trainer.logger.log_dir, REPORT_FILENAME)))
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return report, scalars, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", ["percentile", "zscore"])
def test_host_path_and_device_path_give_the_same_run(tmp_path, monkeypatch, mode):
    (tmp_path / "device").mkdir(), (tmp_path / "host").mkdir()
    device_report, device_scalars, device_weights = _fit(tmp_path / "device", False, mode, monkeypatch)
    host_report, host_scalars, host_weights = _fit(tmp_path / "host", True, mode, monkeypatch)

    def actions(report):
        return [(i["source"], i["action"], i["step"], i.get("detail", {}).get("clipped_steps"))
                for i in report["interventions"]]

    assert actions(host_report) == actions(device_report)
    assert {a for _, a, _, _ in actions(host_report)} == {"clip", "skip_step"}  # both remedies acted
    def diagnoses(report):
        return [(d["kind"], d["severity"], d["step"], d["layer"], [c["cause"] for c in d["causes"]])
                for d in report["diagnoses"]]

    assert diagnoses(host_report) == diagnoses(device_report)
    assert {d[0] for d in diagnoses(host_report)} >= {"exploding_gradients", "nonfinite_loss"}
    ours = [tag for tag in device_scalars if tags.is_suite_tag(tag)]
    assert tags.GRAD_NORM_TOTAL in ours and tags.AUTOCLIP_THRESHOLD in ours
    assert set(host_scalars) == set(device_scalars)
    for tag in ours:
        steps, values = zip(*device_scalars[tag])
        assert [s for s, _ in host_scalars[tag]] == list(steps), tag
        assert [v for _, v in host_scalars[tag]] == pytest.approx(values, rel=1e-4, nan_ok=True), tag
    for a, b in zip(host_weights, device_weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
