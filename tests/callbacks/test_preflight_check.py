"""PreflightCheck from ``Trainer(callbacks=...)`` down: each bug caught at step 0 with the right top
cause, healthy models passing every check, and the run afterwards bit-identical to one without it.

The expected top cause of each scenario is the bug built into its module (decided before the
check was run), not what the check happened to say.
"""

from __future__ import annotations

import json
import os

import lightning as L
import pytest
import torch
from torch import nn

from benchmarks.zoo.models import CNN, MLP, RowsGRU, RowsTransformer
from lightning_convergence import PreflightCheck, default_callbacks
from lightning_convergence.callbacks.preflight_check import LADDER
from tests.helpers.models import TwoOptimizers, trainer_kwargs
from tests.helpers.preflight_models import (BatchNormDropout, Digits, FrozenEncoder, GradientsNeverZeroed,
                                            ScaledRegression, SoftmaxBeforeCrossEntropy)
from tests.helpers.tensorboard import load_events


class Zoo(Digits):
    """One of the zoo's digit classifiers, at its own optimizer settings, on the digits loader."""

    def __init__(self, inner: L.LightningModule, images: bool = False) -> None:
        super().__init__(loader={"images": images})
        del self.net
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def configure_optimizers(self):
        return self.inner.configure_optimizers()


def fit(model, callbacks, tmp_path, **overrides):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **{"max_steps": 1, "logger": False,
                                                                           "deterministic": False, **overrides}))
    trainer.fit(model)
    return trainer


def warnings_of(check: PreflightCheck) -> list[dict]:
    return [d for d in check.records()["diagnoses"] if d["severity"] != "info"]


BUGS = {
    "softmax_before_cross_entropy": (lambda: SoftmaxBeforeCrossEntropy(), "wrong_loss_for_task"),
    "gradients_never_zeroed": (lambda: GradientsNeverZeroed(), "stale_gradients"),
    "encoder_under_no_grad": (lambda: FrozenEncoder(), "gradient_flow_cut"),
    "labels_shuffled_apart": (lambda: Digits(loader={"mismatched_labels": True}), "labels_mismatched"),
    "sorted_by_class_unshuffled": (lambda: Digits(loader={"sort_by_class": True, "shuffle": False}), "unshuffled_data"),
    "targets_at_1e10": (lambda: ScaledRegression(lr=1e-3, loader={"regression_scale": 1e10}), "unnormalized_targets"),
    "lr_100x_too_high": (lambda: Zoo(CNN(lr=5.0), images=True), "learning_rate_too_high"),
}


@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_bug_is_named_at_step_0_with_the_right_top_cause(tmp_path, name):
    make, cause = BUGS[name]
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    fit(make(), [check], tmp_path)
    found = warnings_of(check)
    assert found, f"{name}: no warning; checks: {check.section}"
    assert {d["causes"][0]["cause"] for d in found} == {cause}, [(d["kind"], d["causes"][:2]) for d in found]
    assert all(d["step"] == 0 for d in found)
    assert check.section["ran"] and not check.section["passed"]
    assert check.records()["interventions"] == []  # observing: it never changes the rate


def test_the_cut_off_part_is_named_by_its_module_path(tmp_path):
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    fit(FrozenEncoder(), [check], tmp_path)
    gradients = next(c for c in check.section["checks"] if c["check"] == "gradients")
    assert gradients["numbers"]["no_gradient"] == ["encoder"]
    assert warnings_of(check)[0]["layer"] == "encoder"


HEALTHY = {
    "cnn": lambda: Zoo(CNN(lr=0.05), images=True),
    "mlp": lambda: Zoo(MLP(lr=0.05)),
    "gru": lambda: Zoo(RowsGRU(lr=3e-3)),
    "transformer": lambda: Zoo(RowsTransformer(3e-4, layers=2)),
    "batchnorm_dropout": lambda: BatchNormDropout(),
}


@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_healthy_models_pass_every_check(tmp_path, name):
    check = PreflightCheck(enabled=True, max_seconds=120.0)
    fit(HEALTHY[name](), [check], tmp_path)
    failed = [(c["check"], c["note"]) for c in check.section["checks"] if c["passed"] is not True]
    assert not failed, failed
    assert warnings_of(check) == []
    overfit = next(c for c in check.section["checks"] if c["check"] == "overfit_one_batch")
    assert overfit["numbers"]["memorised_at_multiplier"] == 1.0  # at the configured rate, no other tried


def final_weights(make_model, callbacks, tmp_path, steps=20):
    L.seed_everything(0, verbose=False)
    trainer = fit(make_model(), callbacks, tmp_path, max_steps=steps)
    return torch.cat([p.detach().reshape(-1) for p in trainer.lightning_module.state_dict().values()
                      if p.is_floating_point()])


@pytest.mark.parametrize("suite", [False, True], ids=["alone", "in_default_callbacks"])
def test_the_run_after_it_is_bit_identical_to_one_without_it(tmp_path, suite):
    """Dropout draws from the random state, BatchNorm keeps running statistics, the loader shuffles
    from the random state: all of it must be as if the checks never ran."""
    def others():
        return [c for c in default_callbacks() if not isinstance(c, PreflightCheck)] if suite else []

    without = final_weights(BatchNormDropout, others(), tmp_path / "without")
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    with_check = final_weights(BatchNormDropout, [check, *others()], tmp_path / "with")
    assert check.section["ran"]
    assert torch.equal(without, with_check)


def test_manual_optimisation_restores_exactly_too(tmp_path):
    class Manual(GradientsNeverZeroed):
        def training_step(self, batch, batch_idx):
            self.optimizers().zero_grad()
            super().training_step(batch, batch_idx)

    without = final_weights(Manual, [], tmp_path / "without", steps=10)
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    with_check = final_weights(Manual, [check], tmp_path / "with", steps=10)
    assert check.section["passed"], check.section
    assert torch.equal(without, with_check)


def test_report_section_console_and_tensorboard(tmp_path, capsys):
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    fit(SoftmaxBeforeCrossEntropy(), [check], tmp_path, logger=True, max_steps=2)
    report_path = next(os.path.join(root, f) for root, _, files in os.walk(tmp_path) for f in files
                       if f == "convergence_report.json")
    with open(report_path) as handle:
        report = json.load(handle)
    section = report["preflight"]
    assert [c["check"] for c in section["checks"]] == ["data", "initial_loss", "gradients", "overfit_one_batch",
                                                       "lr_range_test"]
    assert all(isinstance(c["seconds"], float) for c in section["checks"])
    assert any(d["source"] == "PreflightCheck" and d["causes"][0]["cause"] == "wrong_loss_for_task"
               for d in report["diagnoses"])
    events = load_events(str(tmp_path))
    assert "convergence/preflight/text_summary" in events.Tags()["tensors"]


def test_acting_applies_the_measured_rate_through_the_shared_lr_control(tmp_path):
    check = PreflightCheck(enabled=True, auto_remediate=True, max_seconds=600.0)
    trainer = fit(Zoo(CNN(lr=5.0), images=True), [check], tmp_path, logger=True, max_steps=3)
    [scale] = [i for i in check.records()["interventions"] if i["action"] == "lr_scale"]
    assert scale["detail"]["reason"] == "lr_range_test" and scale["step"] == 0
    factor = scale["detail"]["factor"]
    assert 1e-3 <= factor <= 0.1  # the configured rate is 100x the tuned one
    assert trainer.optimizers[0].param_groups[0]["lr"] == 5.0  # the scheduler's value; the factor applies in step


@pytest.mark.parametrize("overrides, reason", [
    ({"fast_dev_run": 1}, "fast_dev_run"),
])
def test_refuses_politely(tmp_path, overrides, reason):
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    fit(Digits(), [check], tmp_path, **overrides)
    assert check.section == {"ran": False, "reason": "fast_dev_run is on"}


def test_refuses_several_manual_optimizers(tmp_path):
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    fit(TwoOptimizers(), [check], tmp_path)
    assert check.section == {"ran": False, "reason": "manual optimisation with several optimizers"}


def test_refuses_a_resumed_fit_and_keeps_the_first_section(tmp_path):
    check = PreflightCheck(enabled=True, max_seconds=600.0)
    trainer = fit(Digits(), [check], tmp_path, max_steps=2)
    path = str(tmp_path / "last.ckpt")
    trainer.save_checkpoint(path)
    first = check.section
    resumed = PreflightCheck(enabled=True, max_seconds=600.0)
    trainer = L.Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path, max_steps=4, logger=False))
    trainer.fit(Digits(), ckpt_path=path)
    assert resumed.section == first


class StopAfterOneStep(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        trainer.should_stop = True


def test_on_by_default_only_when_it_costs_under_2_percent(tmp_path):
    short = PreflightCheck()
    fit(Digits(), [short, StopAfterOneStep()], tmp_path, max_steps=1000, max_epochs=None)  # over 2% of 1,000
    assert short.section is None
    long = PreflightCheck()
    fit(Digits(), [long, StopAfterOneStep()], tmp_path, max_steps=50_000, max_epochs=None)
    assert long.section["ran"]


def test_a_clock_past_the_limit_stops_the_checks_and_still_restores(tmp_path):
    ticks = iter(range(0, 10_000, 7))
    check = PreflightCheck(enabled=True, max_seconds=20.0, clock=lambda: float(next(ticks)))
    without = final_weights(BatchNormDropout, [], tmp_path / "without", steps=5)
    with_check = final_weights(BatchNormDropout, [check], tmp_path / "with", steps=5)
    assert torch.equal(without, with_check)
    overfit = next(c for c in check.section["checks"] if c["check"] == "overfit_one_batch")
    assert overfit["passed"] is None  # inconclusive, not a bug: it ran out of time
    assert warnings_of(check) == []


def test_a_failing_training_step_is_reported_and_the_run_meets_it(tmp_path):
    class Fails(Digits):
        def training_step(self, batch, batch_idx):
            raise ValueError("user bug")

    check = PreflightCheck(enabled=True, max_seconds=600.0)
    with pytest.raises(ValueError, match="user bug"):
        fit(Fails(), [check], tmp_path)
    assert check.section["checks"][0]["note"] == "ValueError: user bug"
    assert check.records()["diagnoses"] == []


@pytest.mark.parametrize("kwargs, message", [
    ({"num_batches": 1}, "`num_batches` must be at least 2"),
    ({"range_test_steps": 0}, "`range_test_steps`"),
    ({"overfit_steps": 4}, "`overfit_steps` must be at least 5"),
    ({"max_seconds": float("nan")}, "`max_seconds`"),
    ({"enabled": "yes"}, "`enabled`"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        PreflightCheck(**kwargs)


def test_the_ladder_tries_lower_rates_first():
    assert LADDER[0] == 1.0 and LADDER[1] < 1.0
