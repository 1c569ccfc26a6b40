"""No host sync on steps that do not log, for every callback that runs per step."""

import os
import traceback

import lightning as L
import pytest
import torch

import lightning_convergence
import lightning_convergence.stats.host
from lightning_convergence import AutoClip, GradientNormMonitor, default_callbacks
from tests.helpers.models import DigitsMLP, trainer_kwargs

SYNC_METHODS = ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy")
PACKAGE_DIR = os.path.dirname(lightning_convergence.__file__)


def watch_package_reads(monkeypatch) -> tuple[list[str], L.Callback]:
    """Patch every Tensor method that moves a value to the host. While the returned callback
    watches (from batch start to batch end on steps that do not log; every 10th step logs), each
    such call whose innermost package frame is ours is recorded as "<method> from <file>:<line>".
    (On CPU nothing would block, so this is how a CPU test proves the CUDA path is sync-free.)"""
    calls: list[str] = []
    state = {"watch": False}

    def wrap(name):
        original = getattr(torch.Tensor, name)

        def patched(self, *args, **kwargs):
            if state["watch"]:
                for frame in reversed(traceback.extract_stack()[:-1]):
                    if frame.filename.startswith(PACKAGE_DIR):
                        # The allowed reads: cpu_scalar, cpu_floats and cpu_sums_of_squares, which refuse any non-CPU tensor.
                        if not (frame.name in ("cpu_scalar", "cpu_floats", "cpu_sums_of_squares") and self.device.type == "cpu"):
                            calls.append(f"{name} from {os.path.basename(frame.filename)}:{frame.lineno}")
                        break
            return original(self, *args, **kwargs)

        return patched

    for name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            state["watch"] = (trainer.global_step + 1) % 10 != 0 and trainer.global_step > 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            state["watch"] = False

    return calls, Watch()


def fit_watched(tmp_path, monkeypatch, callbacks) -> tuple[list[str], L.Trainer]:
    calls, watch = watch_package_reads(monkeypatch)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=[watch] + callbacks, **trainer_kwargs(tmp_path, logger=False, max_epochs=2))
    trainer.fit(DigitsMLP())
    return calls, trainer


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
@pytest.mark.parametrize("host_path", [False, True], ids=["device-path", "host-path"])
def test_no_host_sync_on_steps_that_do_not_log(tmp_path, monkeypatch, callbacks, host_path):
    """None of the patched methods is called from our package during a step that does not log.
    With the host path off, CPU tensors take the path an accelerator takes, so this proves it
    sync-free; with it on, the only reads are the CPU-only ``cpu_scalar`` and ``cpu_floats``."""
    monkeypatch.setattr(lightning_convergence.stats.host, "HOST_PATH_ON_CPU", host_path)
    calls, trainer = fit_watched(tmp_path, monkeypatch, callbacks())
    assert calls == []
    assert trainer.global_step == 32  # the run happened, and 27 of its steps were watched


def _reading(module, name: str, monkeypatch):
    """Make the package function ``module.name`` read its result on the host, as a per-step
    ``if x.item() > ...`` slipped into package code would."""
    original = getattr(module, name)

    def reads(*args, **kwargs):
        result = original(*args, **kwargs)
        result.reshape(-1)[0].item()
        return result

    monkeypatch.setattr(module, name, reads)


@pytest.mark.parametrize(
    ("module", "name", "callbacks", "caller"),
    [
        # AutoClip's per-step threshold: the read is made from on_before_optimizer_step.
        ("lightning_convergence.callbacks.autoclip", "clip_coefficient",
         lambda: [AutoClip(mode="percentile", log_every_n_steps=10)], "autoclip.py"),
        # The monitor's per-step gradient statistics, reached through the shared run context.
        ("lightning_convergence.callbacks._context", "sum_of_squares",
         lambda: default_callbacks(log_every_n_steps=10, histogram_every_n_steps=10), "_context.py"),
    ],
    ids=["autoclip-threshold", "suite-gradient-stats"],
)
def test_the_detector_catches_a_read_planted_in_package_code(tmp_path, monkeypatch, module, name, callbacks,
                                                              caller):
    """The positive control: a read planted on a per-step package path is caught, once per watched
    step, and attributed to the package file that made the call."""
    import importlib

    monkeypatch.setattr(lightning_convergence.stats.host, "HOST_PATH_ON_CPU", False)  # the accelerator's path
    _reading(importlib.import_module(module), name, monkeypatch)
    calls, trainer = fit_watched(tmp_path, monkeypatch, callbacks())
    assert trainer.global_step == 32
    assert calls, "a per-step .item() inside package code was not caught"
    assert {call.split(" from ")[0] for call in calls} == {"item"}
    assert {call.split(" from ")[1].split(":")[0] for call in calls} == {caller}
    assert len(calls) >= 27  # every watched step (32 steps, minus step 0 and the 4 logging steps)
