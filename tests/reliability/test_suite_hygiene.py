"""What every callback and the whole suite owe a user whatever else happens (RELIABILITY E, F):
they pickle and deep-copy, keep their state in checkpoints, leave nothing behind after fit or a
fault, touch no param_group key, log only under ``convergence/``, and keep a fault's exception
the user's own."""

import copy
import io
import json
import math
import os
import pickle

import lightning as L
import pytest
import torch

from lightning_convergence import default_callbacks
from lightning_convergence.callbacks.registry import CALLBACKS, load
from lightning_convergence.recorder import REPORT_FILENAME
from tests.helpers.loggers import MemoryLogger
from tests.helpers.models import DigitsMLP, trainer_kwargs

NAMES = [entry.name for entry in CALLBACKS]
SUITES = {"observe": lambda: default_callbacks(),
          "act": lambda: default_callbacks(auto_remediate=True, warmup_steps=5)}
USER_KEYS = {"train_loss", "val_loss", "epoch"}


def build(entry):
    return load(entry)(**entry.example)


def our_hooks(model):
    """Forward hooks on the model's modules and step hooks on its optimizers that are still there."""
    modules = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    optimizers = sum(len(o._optimizer_step_pre_hooks) + len(o._optimizer_step_post_hooks)
                     for o in model.trainer.optimizers) if model._trainer is not None else 0
    return modules, optimizers


@pytest.mark.parametrize("entry", CALLBACKS, ids=NAMES)
def test_every_callback_pickles_and_deep_copies_before_fit(entry):
    callback = build(entry)
    for clone in (pickle.loads(pickle.dumps(callback)), copy.deepcopy(callback)):
        assert type(clone) is load(entry) and clone.state_key == callback.state_key


@pytest.mark.parametrize("entry", CALLBACKS, ids=NAMES)
def test_every_callback_state_survives_a_weights_only_load_after_fit(tmp_path, entry):
    callback = build(entry)
    L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, logger=False, max_epochs=1)).fit(DigitsMLP(nan_at_step=3))
    state = callback.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert_same_state(loaded, state)
    fresh = build(entry)
    fresh.load_state_dict(loaded)
    assert_same_state(fresh._pending_records, state["records"])  # restored into the log at the next fit


def assert_same_state(actual, expected, path="state"):
    """Recursively equal: the same keys, tensors equal in dtype, shape and value (NaN where NaN),
    plain values equal and of the same type."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_same_state(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_state(a, e, f"{path}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), path
        nan = expected.isnan() if expected.is_floating_point() else torch.zeros_like(expected, dtype=torch.bool)
        assert torch.equal(actual.isnan() if actual.is_floating_point() else nan, nan), path
        assert torch.equal(actual[~nan], expected[~nan]), f"{path}: {actual} != {expected}"
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), f"{path}: {actual!r} != nan"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_after_fit_no_hooks_no_param_group_changes_and_only_our_keys(tmp_path, suite):
    model = DigitsMLP(nan_at_step=6)
    logger = MemoryLogger(str(tmp_path))
    keys_before = None

    class Watch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            nonlocal keys_before
            keys_before = [sorted(g) for g in trainer.optimizers[0].param_groups]

    trainer = L.Trainer(callbacks=SUITES[suite]() + [Watch()], **trainer_kwargs(tmp_path, logger=logger, max_epochs=2))
    trainer.fit(model)
    assert our_hooks(model) == (0, 0)
    assert [sorted(g) for g in trainer.optimizers[0].param_groups] == keys_before
    logged = {k for _, metrics in logger.metrics for k in metrics}
    assert {k for k in logged if not k.startswith("convergence/")} <= USER_KEYS
    assert any(k.startswith("convergence/") for k in logged)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_two_fits_register_once_and_end_clean(tmp_path, suite):
    model, callbacks = DigitsMLP(), SUITES[suite]()
    for _ in range(2):
        L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=False, max_epochs=1)).fit(model)
        assert our_hooks(model) == (0, 0)


class Boom(RuntimeError):
    pass


class FailsMidRun(DigitsMLP):
    def training_step(self, batch, batch_idx):
        if self.global_step == 7:
            raise Boom("the user's own bug")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_an_exception_in_training_step_keeps_the_report_removes_hooks_and_propagates(tmp_path, suite):
    model = FailsMidRun(nan_at_step=3)
    lrs = [g["lr"] for g in torch.optim.SGD(model.parameters(), lr=model.lr).param_groups]
    trainer = L.Trainer(callbacks=SUITES[suite](), **trainer_kwargs(tmp_path, max_epochs=2, log_every_n_steps=2))
    with pytest.raises(Boom, match="the user's own bug"):
        trainer.fit(model)
    assert our_hooks(model) == (0, 0)
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == lrs  # no factor left applied
    report = json.load(open(os.path.join(trainer.log_dir, REPORT_FILENAME)))
    assert any(d["kind"] == "nonfinite_loss" for d in report["diagnoses"])  # what was seen before the fault


@pytest.mark.parametrize("entry", CALLBACKS, ids=NAMES)
def test_two_instances_keep_separate_state(tmp_path, entry):
    if entry.second_instance is None:
        pytest.skip(f"{entry.name} has no setting that tells two instances apart: one per Trainer is the use")
    first, second = build(entry), load(entry)(**entry.second_instance)
    assert first.state_key != second.state_key
    trainer = L.Trainer(callbacks=[first, second], **trainer_kwargs(tmp_path, logger=False, max_epochs=1,
                                                                      enable_checkpointing=True))
    trainer.fit(DigitsMLP())
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert {first.state_key, second.state_key} <= set(checkpoint["callbacks"])
