"""DeadNeuronTracker state: weights-only checkpoints, and resume right after a revival and
in the middle of a window gives the same run as no interruption."""

import io

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_convergence import DeadNeuronTracker
from tests.helpers.models import DigitsMLP, trainer_kwargs


class HalfDead(DigitsMLP):
    def __init__(self):
        super().__init__(hidden=16, shuffle=False)
        with torch.no_grad():
            self.net[0].bias[:8] = -50.0


def tracker():
    # Windows end every 6 steps: the checkpoint after epoch 2 (step 32) falls inside one.
    return DeadNeuronTracker(sample_every_n_steps=1, min_batches=2, auto_remediate=True, redo_cooldown_steps=12)


def train(root, epochs, callback, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    model = HalfDead()
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
    trainer = L.Trainer(callbacks=[callback, checkpoint], **trainer_kwargs(
        root, logger=False, max_epochs=epochs, enable_checkpointing=True, log_every_n_steps=6))
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


def test_state_dict_survives_weights_only_load(tmp_path):
    callback = tracker()
    train(tmp_path, 1, callback)
    buffer = io.BytesIO()
    torch.save(callback.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["records"]["interventions"][0]["action"] == "reinit_units"
    assert set(state["sites"]) == {"net.1", "net.3"} and state["last_revival"]
    fresh = tracker()
    fresh.load_state_dict(state)
    assert fresh._last_revival == callback._last_revival
    assert torch.equal(fresh._sites.sites["net.1"].accumulator.activity().abs_sum,
                       callback._sites.sites["net.1"].accumulator.activity().abs_sum)


def test_resume_mid_window_after_a_revival_is_bit_identical(tmp_path):
    full_tracker = tracker()
    _, full_model = train(tmp_path / "full", 4, full_tracker)
    train(tmp_path / "part", 2, tracker())
    resumed_tracker = tracker()
    _, resumed_model = train(tmp_path / "part", 4, resumed_tracker,
                             ckpt_path=str(tmp_path / "part" / "ckpt" / "last.ckpt"))
    a = torch.cat([p.detach().reshape(-1) for p in full_model.parameters()])
    b = torch.cat([p.detach().reshape(-1) for p in resumed_model.parameters()])
    assert torch.equal(a, b)
    full_state, resumed_state = full_tracker.state_dict(), resumed_tracker.state_dict()
    assert full_state["records"] == resumed_state["records"]
    assert len([i for i in full_state["records"]["interventions"] if i["action"] == "reinit_units"]) >= 1
    assert full_state["last_revival"] == resumed_state["last_revival"]
