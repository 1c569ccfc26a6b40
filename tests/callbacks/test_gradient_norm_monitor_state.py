"""State and resume, watching changes nothing, and no host sync on non-logging steps."""

import io
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_convergence import GradientNormMonitor, default_callbacks
from lightning_convergence.report.console import ConvergenceWarning
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


SYNC_METHODS = ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy")


def test_no_host_sync_on_steps_that_do_not_log(tmp_path, monkeypatch):
    """Patch every Tensor method that moves a value to the host; none may be called from our
    package during a training step that does not log. (On CPU nothing would block, so this is
    how a CPU test proves the CUDA path is sync-free.)"""
    import lightning_convergence

    package_dir = os.path.dirname(lightning_convergence.__file__)
    calls: list[str] = []
    state = {"watch": False}

    def wrap(name):
        original = getattr(torch.Tensor, name)

        def patched(self, *args, **kwargs):
            if state["watch"]:
                import traceback

                for frame in traceback.extract_stack()[:-1]:
                    if frame.filename.startswith(package_dir):
                        calls.append(f"{name} from {os.path.basename(frame.filename)}:{frame.lineno}")
                        break
            return original(self, *args, **kwargs)

        return patched

    for name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))

    class Watch(L.Callback):
        """Watches on steps that do not log (every 10th does), from batch start to batch end."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            state["watch"] = (trainer.global_step + 1) % 10 != 0 and trainer.global_step > 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            state["watch"] = False

    model = DigitsMLP()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=[Watch()] + default_callbacks(log_every_n_steps=10, histogram_every_n_steps=10),
                        **trainer_kwargs(tmp_path, logger=False, max_epochs=2))
    trainer.fit(model)
    assert calls == []
    # The patches work: a logging step does read (once).
    state["watch"] = True
    torch.ones(1).tolist()
    assert calls == [] and trainer.global_step == 32
