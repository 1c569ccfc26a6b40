"""No host sync on steps that do not log, for every callback that runs per step."""

import os

import lightning as L
import pytest
import torch

from lightning_convergence import AutoClip, GradientNormMonitor, default_callbacks
from tests.helpers.models import DigitsMLP, trainer_kwargs

SYNC_METHODS = ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy")


@pytest.mark.parametrize(
    "callbacks",
    [
        lambda: default_callbacks(log_every_n_steps=10, histogram_every_n_steps=10),
        lambda: [AutoClip(mode="percentile", log_every_n_steps=10)],
        lambda: [AutoClip(mode="zscore", log_every_n_steps=10, clip_warmup_steps=3)],
        lambda: [AutoClip(mode="agc", log_every_n_steps=10)],
        # The suite acting, minus the monitor's skip check (one read per step, documented):
        lambda: [GradientNormMonitor(log_every_n_steps=10), AutoClip(mode="zscore", log_every_n_steps=10)],
    ],
    ids=["suite-observing", "autoclip-percentile", "autoclip-zscore", "autoclip-agc", "monitor+autoclip"],
)
def test_no_host_sync_on_steps_that_do_not_log(tmp_path, monkeypatch, callbacks):
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

                for frame in reversed(traceback.extract_stack()[:-1]):
                    if frame.filename.startswith(package_dir):
                        # The one allowed read: cpu_scalar, which refuses any non-CPU tensor.
                        if not (frame.name == "cpu_scalar" and self.device.type == "cpu"):
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
    trainer = L.Trainer(callbacks=[Watch()] + callbacks(),
                        **trainer_kwargs(tmp_path, logger=False, max_epochs=2))
    trainer.fit(model)
    assert calls == []
    # The patches work: a logging step does read (once).
    state["watch"] = True
    torch.ones(1).tolist()
    assert calls == [] and trainer.global_step == 32
