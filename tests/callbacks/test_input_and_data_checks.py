"""InputSanityChecker, InitializationAudit and DataLoadingMonitor (TrainingSpeedMonitor's former name) from
Trainer.fit down."""

import io
import math
import time

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_convergence import (
    DataLoadingMonitor,
    InitializationAudit,
    InputSanityChecker,
    default_callbacks,
)
from tests.helpers.models import DigitsMLP, digits_tensors, trainer_kwargs


def fit(tmp_path, model, callbacks, **kwargs):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(**trainer_kwargs(tmp_path, logger=False, **{"max_epochs": 2, **kwargs}), callbacks=callbacks)
    trainer.fit(model)
    return trainer


def diagnoses(trainer, callbacks, least="info"):
    order = ["info", "warning", "critical"]
    found = []
    for callback in callbacks:
        found += [d for d in callback._records_state(trainer)["diagnoses"]
                  if order.index(d["severity"]) >= order.index(least)]
    return found


class Loader(DigitsMLP):
    """DigitsMLP whose training data is transformed by ``make`` (x, y) -> (x, y)."""

    def __init__(self, make=None, **kwargs):
        super().__init__(**kwargs)
        self.make = make

    def train_dataloader(self):
        x, y = digits_tensors(self.n)
        if self.make is not None:
            x, y = self.make(x.clone(), y.clone())
        return DataLoader(TensorDataset(x, y), batch_size=32)


def test_raw_pixels_are_unnormalized_inputs(tmp_path):
    checker = InputSanityChecker()
    trainer = fit(tmp_path, Loader(lambda x, y: (x * 255.0, y)), [checker])
    found = diagnoses(trainer, [checker], "warning")
    assert [d["kind"] for d in found] == ["unnormalized_inputs"]
    assert found[0]["layer"] == "batch[0]" and found[0]["step"] <= 2 and "0-255 pixel" in found[0]["message"]


def test_a_nan_batch_is_found_at_its_step_and_skipped_when_asked(tmp_path):
    def poison(x, y):
        x[100, 3] = math.nan  # sample 100: in batch 3, which is not a sampled step
        return x, y

    checker = InputSanityChecker(auto_remediate=True)
    model = Loader(poison)
    trainer = fit(tmp_path, model, [checker], max_epochs=1)
    found = diagnoses(trainer, [checker], "warning")
    assert [(d["kind"], d["step"]) for d in found] == [("nonfinite_inputs", 3)]
    skips = checker._records_state(trainer)["interventions"]
    assert [(i["action"], i["step"], i["detail"]["reason"]) for i in skips] == [("skip_step", 3, "nonfinite_inputs")]
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_observing_on_the_cpu_a_nan_batch_is_found_at_its_step_from_its_loss(tmp_path):
    # Batch 3 is not sampled: on the host path it is looked at because its loss is NaN, after the
    # optimizer step, and counted at the step it belongs to.
    def poison(x, y):
        x[100, 3] = math.nan
        return x, y

    checker = InputSanityChecker()
    trainer = fit(tmp_path, Loader(poison), [checker], max_epochs=1)
    found = diagnoses(trainer, [checker], "warning")
    assert [(d["kind"], d["step"]) for d in found] == [("nonfinite_inputs", 3)]
    assert "first at step 3" in found[0]["message"]


class Masked(Loader):
    """NaN in the data that the model replaces before use: the loss and the gradients stay finite."""

    def forward(self, x):
        return super().forward(torch.nan_to_num(x, nan=0.0).detach())


@pytest.mark.parametrize("host_path", [True, False])
def test_nan_that_never_reaches_the_loss_is_counted_only_on_sampled_batches_on_the_cpu(tmp_path, monkeypatch,
                                                                                       host_path):
    # On the host path an unsampled batch is looked at only when its loss is not finite (reading
    # the whole batch every step is what this saves); the accelerator's path counts every batch.
    import lightning_convergence.stats.host
    monkeypatch.setattr(lightning_convergence.stats.host, "HOST_PATH_ON_CPU", host_path)

    def poison(x, y):
        x[100, 3] = math.nan  # batch 3: not sampled (steps 0-2 and every 10th are)
        x[10 * 32 + 5, 3] = math.nan  # batch 10: sampled
        return x, y

    checker = InputSanityChecker()
    trainer = fit(tmp_path, Masked(poison), [checker], max_epochs=1)
    found = [(d["kind"], d["step"]) for d in diagnoses(trainer, [checker], "warning")]
    assert found[0] == (("nonfinite_inputs", 10) if host_path else ("nonfinite_inputs", 3))


class OneBased(Loader):
    """Labels 1..10 in the data, shifted back in training_step (so the loss itself runs)."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y - 1)


def test_labels_out_of_range_are_found_when_the_class_count_is_known(tmp_path):
    class Shifted(OneBased):
        num_classes = 10

    checker = InputSanityChecker()
    trainer = fit(tmp_path, Shifted(lambda x, y: (x, y + 1)), [checker], max_epochs=1)
    found = diagnoses(trainer, [checker], "critical")
    assert found and found[0]["evidence"] == {"problem": "labels_out_of_range", "min": 1.0, "max": 10.0,
                                              "num_classes": 10}
    assert found[0]["layer"] == "batch[1]"


def test_unknown_class_count_is_said_once(tmp_path, caplog):
    checker = InputSanityChecker()
    with caplog.at_level("INFO"):
        fit(tmp_path, OneBased(lambda x, y: (x, y + 1)), [checker], max_epochs=1)
    assert sum("number of classes is unknown" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("init,problem", [(nn.init.zeros_, "all_zero"),
                                          (lambda w: nn.init.constant_(w, 0.05), "identical_rows")])
def test_zero_and_symmetric_init_are_poor_initialization(tmp_path, init, problem):
    model = DigitsMLP()
    for layer in model.net:
        if isinstance(layer, nn.Linear):
            init(layer.weight)
    audit = InitializationAudit()
    trainer = fit(tmp_path, model, [audit], max_epochs=1)
    found = diagnoses(trainer, [audit])
    assert [(d["layer"], d["severity"]) for d in found] == [("net.0", "warning"), ("net.2", "warning"),
                                                             ("net.4", "info")]
    assert all(d["evidence"]["problem"] == problem and d["step"] == 0 for d in found)


def test_audit_is_not_repeated_on_resume_and_state_loads(tmp_path):
    audit = InitializationAudit()
    buffer = io.BytesIO()
    torch.save(audit.state_dict(), buffer)
    buffer.seek(0)
    fresh = InitializationAudit()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh._audited is False


class SlowDigits(Dataset):
    """Digits whose every sample takes 3 ms to load, on an injected clock (no real sleep)."""

    def __init__(self, clock):
        self.x, self.y = digits_tensors(768)
        self.clock = clock

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        self.clock[0] += 0.003  # decoding on the training process
        return self.x[index], self.y[index]


def test_a_slow_dataset_is_slow_data_loading_under_the_old_name_too(tmp_path):
    clock = [0.0]

    class Slow(DigitsMLP):
        def training_step(self, batch, batch_idx):
            clock[0] += 0.002
            return super().training_step(batch, batch_idx)

        def train_dataloader(self):
            return DataLoader(SlowDigits(clock), batch_size=32, num_workers=0)

    monitor = DataLoadingMonitor(log_every_n_steps=4, clock=lambda: clock[0], cpu_clock=lambda: clock[0])
    trainer = fit(tmp_path, Slow(), [monitor], max_epochs=1)
    found = diagnoses(trainer, [monitor], "warning")
    assert found and found[0]["kind"] == "slow_data_loading"
    assert found[0]["evidence"]["fetch_share"] > 0.9 and found[0]["evidence"]["num_workers"] == 0


def test_healthy_run_gets_no_warning_from_the_suite(tmp_path):
    callbacks = default_callbacks(num_classes=10)
    trainer = fit(tmp_path, DigitsMLP(n=1024), callbacks, max_epochs=3)
    assert diagnoses(trainer, callbacks, "warning") == []


def test_watching_changes_nothing(tmp_path):
    results = []
    for callbacks in ([], [InputSanityChecker(), InitializationAudit(), DataLoadingMonitor()]):
        L.seed_everything(0, verbose=False)
        model = DigitsMLP(dropout=0.2)
        fit(tmp_path, model, callbacks, max_epochs=1)
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("build,error,named", [
    (lambda: InputSanityChecker(first_batches=0), ValueError, "first_batches"),
    (lambda: InputSanityChecker(sample_every_n_steps=True), TypeError, "sample_every_n_steps"),
    (lambda: InputSanityChecker(num_classes=1), ValueError, "num_classes"),
    (lambda: InputSanityChecker(thresholds={}), TypeError, "thresholds"),
    (lambda: InputSanityChecker(auto_remediate="yes"), TypeError, "auto_remediate"),
    (lambda: InitializationAudit(scale_factor=1.0), ValueError, "scale_factor"),
    (lambda: InitializationAudit(scale_factor=math.inf), ValueError, "scale_factor"),
    (lambda: DataLoadingMonitor(log_every_n_steps=0), ValueError, "log_every_n_steps"),
    (lambda: DataLoadingMonitor(thresholds=0.5), TypeError, "thresholds"),
])
def test_bad_arguments_raise_naming_the_argument(build, error, named):
    with pytest.raises(error, match=named):
        build()


def test_a_regression_target_far_from_zero_is_not_an_unnormalized_input(tmp_path):
    class Regression(DigitsMLP):
        def train_dataloader(self):
            x, y = digits_tensors(self.n)
            return DataLoader(TensorDataset(x, 100.0 + y.float()), batch_size=32)  # targets around 104

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x)[:, 0], (y - 100.0) / 10)

    checker = InputSanityChecker()
    trainer = fit(tmp_path, Regression(), [checker], max_epochs=1)
    assert diagnoses(trainer, [checker], "warning") == []
