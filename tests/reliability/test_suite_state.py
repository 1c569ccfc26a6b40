"""State and resume for the whole suite (RELIABILITY A): a run stopped and resumed from its
checkpoint ends bit-identical to an uninterrupted one, with the checkpoint taken while remedies
are active: warmup half done, an LR reduction just made, AutoClip's history filled, dead units
just revived."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_convergence import default_callbacks
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.rules.loss_regime import RegimeThresholds
from tests.helpers.models import DigitsMLP, trainer_kwargs


class Busy(DigitsMLP):
    """Half the first layer's units dead, and a validation metric that stops improving."""

    def __init__(self):
        super().__init__(hidden=16, shuffle=False)  # no global RNG use: Lightning does not restore it
        with torch.no_grad():
            self.net[0].bias[:8] = -50.0

    def validation_step(self, batch, batch_idx):
        self.log("val_metric", 1.0)  # never improves after the first check

    test_step = validation_step


def suite(act):
    if not act:
        return default_callbacks(log_every_n_steps=6, monitor="val_metric")
    return default_callbacks(auto_remediate=True, log_every_n_steps=6, warmup_steps=40,
                             # The LR is cut only after progress: 0.01% counts here (the warmup is slow).
                             PlateauAdvisor={"monitor": "val_metric", "patience": 0,
                                             "thresholds": RegimeThresholds(no_learning_progress=1e-4)},
                             DeadNeuronTracker={"sample_every_n_steps": 1, "min_batches": 2, "redo_cooldown_steps": 12})


def train(root, epochs, callbacks, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    model = Busy()
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
    trainer = L.Trainer(callbacks=callbacks + [checkpoint], **trainer_kwargs(
        root, logger=False, max_epochs=epochs, enable_checkpointing=True, log_every_n_steps=6))
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


def states(callbacks):
    return {type(c).__name__: c.state_dict() for c in callbacks if hasattr(c, "state_dict")}


def same(a, b):
    if isinstance(a, torch.Tensor):
        # Bit-identical, with NaN in the same places (an unset "first" slot of a window is NaN).
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.parametrize("act", [False, True], ids=["observe", "act"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, act):
    full_callbacks = suite(act)
    full, full_model = train(tmp_path / "full", 4, full_callbacks)
    part_callbacks = suite(act)
    part, _ = train(tmp_path / "part", 2, part_callbacks)
    if act:  # the checkpoint is taken with every remedy busy
        done = {i["action"] for c in part_callbacks for i in c._records_state(part)["interventions"]}
        assert {"warmup", "lr_scale", "reinit_units"} <= done
        assert part.global_step == 32 < 40  # warmup half done
    resumed_callbacks = suite(act)
    resumed, resumed_model = train(tmp_path / "part", 4, resumed_callbacks, str(tmp_path / "part" / "ckpt" / "last.ckpt"))
    assert resumed.global_step == full.global_step == 64
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert [g["lr"] for g in full.optimizers[0].param_groups] == [g["lr"] for g in resumed.optimizers[0].param_groups]
    full_states, resumed_states = states(full_callbacks), states(resumed_callbacks)
    for name in full_states:
        assert same(full_states[name], resumed_states[name]), name


def test_a_checkpoint_without_our_state_loads_with_one_warning_each(tmp_path):
    train(tmp_path, 1, [])
    with pytest.warns(ConvergenceWarning, match="holds no state") as record:
        train(tmp_path, 2, suite(True), str(tmp_path / "ckpt" / "last.ckpt"))
    assert len([w for w in record if "holds no state" in str(w.message)]) == len(suite(True))


def test_validate_and_test_with_a_checkpoint_do_nothing_harmful(tmp_path):
    callbacks = suite(True)
    trainer, model = train(tmp_path, 1, callbacks)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.validate(model, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), verbose=False)
    trainer.test(model, dataloaders=model.val_dataloader(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
                 verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
