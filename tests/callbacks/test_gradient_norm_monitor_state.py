"""State and resume, watching changes nothing, and no host sync on non-logging steps."""

import io

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_convergence import GradientNormMonitor, default_callbacks
from lightning_convergence.recorder.console import ConvergenceWarning
from tests.helpers.models import DigitsMLP, trainer_kwargs


def _weights(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_state_dict_survives_weights_only_load(tmp_path):
    monitor = GradientNormMonitor(auto_remediate=True)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=False))
    trainer.fit(DigitsMLP(nan_at_step=3))
    buffer = io.BytesIO()
    torch.save(monitor.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["records"]["interventions"][0]["action"] == "skip_step"
    fresh = GradientNormMonitor(auto_remediate=True)
    fresh.load_state_dict(state)
    assert fresh._pending_tracks[0]["spike"]["cursor"] == 16


def _train(tmp_path, epochs, ckpt_path=None, callbacks=None, dropout=0.2, nan_at_step=None, shuffle=True):
    L.seed_everything(0, verbose=False)
    model = DigitsMLP(dropout=dropout, nan_at_step=nan_at_step, shuffle=shuffle)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(callbacks=(callbacks or []) + [checkpoint],
                        **trainer_kwargs(tmp_path, logger=False, max_epochs=epochs, enable_checkpointing=True))
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    # Lightning does not restore the global RNG on resume, so the model itself must not draw from
    # it (no shuffling, no dropout) for the comparison to isolate what our callback does.
    kw = {"dropout": 0.0, "shuffle": False, "nan_at_step": 5}
    full_monitor = GradientNormMonitor(auto_remediate=True, log_every_n_steps=3)
    full, full_model = _train(tmp_path / "full", 4, callbacks=[full_monitor], **kw)
    _train(tmp_path / "part", 2, callbacks=[GradientNormMonitor(auto_remediate=True, log_every_n_steps=3)], **kw)
    resumed_monitor = GradientNormMonitor(auto_remediate=True, log_every_n_steps=3)
    resumed, resumed_model = _train(tmp_path / "part", 4, ckpt_path=str(tmp_path / "part" / "ckpt" / "last.ckpt"),
                                    callbacks=[resumed_monitor], **kw)
    assert resumed.global_step == full.global_step == 64
    assert torch.equal(_weights(full_model), _weights(resumed_model))
    a, b = full_monitor.state_dict(), resumed_monitor.state_dict()
    assert a["records"] == b["records"]  # the skip at step 5 is recorded once, not twice
    assert torch.equal(a["tracks"][0]["spike"]["norms"], b["tracks"][0]["spike"]["norms"])
    assert a["tracks"][0]["rule"] == b["tracks"][0]["rule"]


def test_checkpoint_without_our_state_loads_with_defaults(tmp_path):
    _train(tmp_path, 1)  # no monitor: the checkpoint has no state of ours
    monitor = GradientNormMonitor()
    with pytest.warns(ConvergenceWarning, match="holds no state"):
        trainer, _ = _train(tmp_path, 2, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), callbacks=[monitor])
    assert trainer.global_step == 32


def test_state_of_another_schema_loads_defaults_with_a_warning():
    monitor = GradientNormMonitor()
    with pytest.warns(ConvergenceWarning, match="schema 0"):
        monitor.load_state_dict({"schema": 0, "tracks": {"0": "garbage"}})
    assert monitor._pending_tracks == {}


def test_validate_and_test_with_ckpt_path_do_nothing_harmful(tmp_path):
    trainer, model = _train(tmp_path, 1, callbacks=default_callbacks(auto_remediate=True))
    before = _weights(model).clone()
    trainer.validate(model, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert torch.equal(before, _weights(model))


@pytest.mark.parametrize("callbacks", [lambda: [GradientNormMonitor()], lambda: default_callbacks()])
def test_watching_changes_nothing(tmp_path, callbacks):
    """Observe-only: weights, optimizer state and LR bit-identical on a model with dropout."""
    _, bare = _train(tmp_path / "bare", 2, dropout=0.3)
    trainer, watched = _train(tmp_path / "watched", 2, callbacks=callbacks(), dropout=0.3)
    assert torch.equal(_weights(bare), _weights(watched))
    group = trainer.optimizers[0].param_groups[0]
    assert set(group) == {"params", "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize",
                          "foreach", "differentiable", "fused", "initial_lr"} - ({"initial_lr"} - set(group))
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in watched.modules())


def test_second_fit_does_not_register_twice(tmp_path):
    monitor = GradientNormMonitor()
    L.seed_everything(0, verbose=False)
    model = DigitsMLP()
    for epochs in (1, 2):
        trainer = L.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=False, max_epochs=epochs))
        trainer.fit(model)
    assert not any(m._forward_pre_hooks for m in model.modules())
