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
    train(tmp_path, 2, callback)  # one epoch leaves too few steps after the first windows to revive
    buffer = io.BytesIO()
    torch.save(callback.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["records"]["interventions"][0]["action"] == "reinit_units"
    assert set(state["sites"]["sites"]) == {"net.1", "net.3"} and state["rule"]["last_revival"]
    assert set(state["sites"]["window"]) == {"net.1/abs_sum", "net.3/abs_sum"}  # slots by name
    fresh = tracker()
    fresh.load_state_dict(state)
    assert fresh._rule.state_dict() == callback._rule.state_dict()
    assert torch.equal(fresh._sites.sites["net.1"].accumulator.activity().abs_sum,
                       callback._sites.sites["net.1"].accumulator.activity().abs_sum)


def older_checkpoint_state() -> dict:
    """A state written before the window was declared: per-site tensors, rule state at the top."""
    def site(kind, activation, peak, abs_sum, saturated, values):
        return {"module_name": activation.lower(), "call_index": 0, "activation": activation, "kind": kind, "dim": 1,
                "units": 3, "batches": 2, "values_per_unit": values, "peak": peak, "abs_sum": abs_sum,
                "saturated": saturated}

    return {
        "schema": 1, "records": {"diagnoses": [], "interventions": []},
        "rule": {"dead_streak": {"relu": 1}, "saturation_streak": {}},
        "sites": {
            "relu": site("nonnegative", "ReLU", None, torch.tensor([0.0, 2.0, 5.0]), None, 16),
            "gelu": site("signed", "GELU", torch.tensor([-0.1, 0.5, 1.0]), torch.tensor([1.0, 2.0, 3.0]), None, 16),
            "tanh": site("tanh", "Tanh", None, torch.tensor([4.0, 4.0, 1.0]), torch.tensor([8.0, 0.0, 1.0]), 16),
        },
        "last_revival": {"relu": 12}, "window_start": 18, "previous_start": 12,
        "previous_dead": {"relu": [True, False, False]}, "previous_batches": {"relu": 2}, "last_evaluated": 18,
    }


def test_an_older_checkpoint_loads_into_the_window_and_the_rule():
    fresh = tracker()
    fresh.load_state_dict(older_checkpoint_state())
    assert fresh._rule.state_dict() == {
        "dead_streak": {"relu": 1}, "saturation_streak": {}, "previous_dead": {"relu": [True, False, False]},
        "previous_batches": {"relu": 2}, "window_start": 18, "previous_start": 12, "last_revival": {"relu": 12}}
    sites = {site.layer: site for site in fresh._sites.read()}
    assert sites["relu"].peak == [0.0, 2.0, 5.0] and sites["relu"].batches == 2
    assert sites["gelu"].peak == [float(torch.tensor(v)) for v in (-0.1, 0.5, 1.0)]  # float32, as saved
    assert sites["tanh"].saturated == [8.0, 0.0, 1.0] and sites["tanh"].values == 16.0
    assert sites["tanh"].peak == [float("inf")] * 3
    assert fresh._last_evaluated == 18
    buffer = io.BytesIO()
    torch.save(fresh.state_dict(), buffer)  # and saves again in the new form
    buffer.seek(0)
    again = tracker()
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert [vars(s) for s in again._sites.read()] == [vars(s) for s in fresh._sites.read()]


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
    assert full_state["rule"] == resumed_state["rule"]  # windows, dead masks and revivals
    assert full_state["sites"]["window"].keys() == resumed_state["sites"]["window"].keys()
    for name, value in full_state["sites"]["window"].items():
        assert torch.equal(value, resumed_state["sites"]["window"][name]), name
