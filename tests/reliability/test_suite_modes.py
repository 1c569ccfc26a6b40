"""The whole suite under every precision and optimisation mode (RELIABILITY C) and every user
configuration (RELIABILITY D): schedulers, loggers, fast_dev_run, the sanity check, no
validation loop."""

import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins import MixedPrecision

from lightning_convergence import default_callbacks
from lightning_convergence.recorder import REPORT_FILENAME
from tests.helpers.models import DigitsMLP, SparseEmbedding, TwoOptimizers, trainer_kwargs
from tests.helpers.no_action import assert_no_action, final_weights
from tests.helpers.tensorboard import load_events

ACT = dict(auto_remediate=True, log_every_n_steps=4)


def fit(tmp_path, model, callbacks=None, **kwargs):
    callbacks = default_callbacks(**ACT) if callbacks is None else callbacks
    # (a copy: Lightning adds its own callbacks to the list it is given)
    trainer = L.Trainer(callbacks=list(callbacks), **trainer_kwargs(tmp_path, **{"max_epochs": 1, **kwargs}))
    trainer.fit(model)
    return trainer, callbacks


def records(trainer, callbacks):
    found = {"diagnoses": [], "interventions": []}
    for callback in callbacks:
        for key, values in callback._records_state(trainer).items():
            found[key] += values
    return found


def test_fp16_overflow_is_amp_overflow_and_left_to_the_scaler(tmp_path):
    class Overflows(DigitsMLP):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * 1e6 if self.global_step == 5 else loss  # scaled, the fp16 gradient overflows

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer, callbacks = fit(tmp_path, Overflows(), plugins=[plugin], logger=False, max_epochs=2)
    found = records(trainer, callbacks)
    assert not [i for i in found["interventions"] if i["action"] in ("skip_step", "stop", "rollback")]
    assert all(d["kind"] != "nonfinite_gradients" or d["severity"] == "info" for d in found["diagnoses"])
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_bf16_nan_batch_is_skipped_and_weights_stay_finite(tmp_path):
    trainer, callbacks = fit(tmp_path, DigitsMLP(nan_at_step=3), precision="bf16-mixed", logger=False)
    assert [i["step"] for i in records(trainer, callbacks)["interventions"] if i["action"] == "skip_step"] == [3]
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_accumulation_counts_optimizer_steps(tmp_path):
    trainer, callbacks = fit(tmp_path, DigitsMLP(nan_at_step=2), accumulate_grad_batches=3, logger=False)
    assert trainer.global_step == 6  # 16 batches / 3
    skips = [i for i in records(trainer, callbacks)["interventions"] if i["action"] == "skip_step"]
    assert [i["step"] for i in skips] == [2]


def test_manual_optimisation_with_two_optimizers_runs(tmp_path):
    trainer, _ = fit(tmp_path, TwoOptimizers(), logger=False)
    assert trainer.global_step == 16


def test_sparse_gradients_run_and_report_healthy(tmp_path):
    trainer, _ = fit(tmp_path, SparseEmbedding())
    report = json.load(open(os.path.join(trainer.log_dir, REPORT_FILENAME)))
    assert not [d for d in report["diagnoses"] if d["severity"] != "info"]


SCHEDULERS = {
    "none": None,
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.9 ** e),
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=32),
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=40),
    "plateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
}


class Scheduled(DigitsMLP):
    def __init__(self, schedule):
        super().__init__(shuffle=False)
        self.schedule = schedule

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if self.schedule is None:
            return optimizer
        scheduler = SCHEDULERS[self.schedule](optimizer)
        interval = "epoch" if self.schedule == "plateau" else "step"
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": "val_loss"}}


@pytest.mark.parametrize("schedule", sorted(SCHEDULERS))
def test_each_scheduler_keeps_its_trajectory_and_the_effective_lr_is_its_times_our_factor(tmp_path, schedule):
    seen = {}

    class Record(L.Callback):
        def __init__(self, key):
            self.key = key

        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.setdefault(self.key, []).append(trainer.optimizers[0].param_groups[0]["lr"])

    L.seed_everything(0, verbose=False)
    fit(tmp_path / "plain", Scheduled(SCHEDULERS[schedule] and schedule), [Record("plain")], max_epochs=2, logger=False)
    L.seed_everything(0, verbose=False)
    callbacks = default_callbacks(auto_remediate=True, warmup_steps=10, log_every_n_steps=4)
    checks = []

    class Effective(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, *args):
            # What the user's scheduler set (inside optimizer.step our factor is applied).
            self.scheduler_lr = trainer.optimizers[0].param_groups[0]["lr"]

        def on_train_batch_end(self, trainer, pl_module, *args):
            control = next(iter(callbacks[0].context(trainer)._lr_controls.values()))
            checks.append((self.scheduler_lr, control.last_effective_lrs[0], control.last_factors[0]))

    fit(tmp_path / "ours", Scheduled(SCHEDULERS[schedule] and schedule), callbacks + [Record("ours"), Effective()],
        max_epochs=2, logger=False)
    if schedule != "plateau":  # ReduceLROnPlateau follows val_loss, which our warmup changes
        assert seen["ours"] == pytest.approx(seen["plain"])  # the scheduler's own trajectory, unchanged
    assert checks and all(used == pytest.approx(lr * factor) for lr, used, factor in checks)
    assert checks[0][2] < 1.0 and checks[-1][2] == 1.0  # warming up, then done: nothing compounds


@pytest.mark.parametrize("loggers", ["none", "tensorboard", "csv", "both"])
def test_every_logger_setup_runs_and_writes_the_report(tmp_path, loggers):
    logger = {"none": False, "tensorboard": TensorBoardLogger(tmp_path), "csv": CSVLogger(tmp_path),
              "both": [TensorBoardLogger(tmp_path), CSVLogger(tmp_path)]}[loggers]
    trainer, _ = fit(tmp_path, DigitsMLP(nan_at_step=3), logger=logger)
    directory = trainer.log_dir if logger else str(tmp_path)
    assert os.path.exists(os.path.join(directory, REPORT_FILENAME))


def test_the_end_of_a_fit_says_the_headline_and_where_the_report_is_once(tmp_path, caplog):
    with caplog.at_level("INFO", logger="lightning.pytorch.utilities.rank_zero"):
        trainer, _ = fit(tmp_path, DigitsMLP(nan_at_step=3), logger=CSVLogger(tmp_path))
    said = [r.getMessage() for r in caplog.records if "Report: " in r.getMessage()]
    path = os.path.join(trainer.log_dir, REPORT_FILENAME)
    report = json.load(open(path))
    assert said == [f"lightning-convergence: {report['summary']['headline']} Report: {path} "
                    f"(`lightning-convergence report {trainer.log_dir}` shows it)."]
    assert "nonfinite" in said[0]


def test_fast_dev_run_takes_no_action_where_a_real_run_would(tmp_path):
    def make_model():
        return DigitsMLP(nan_at_step=1)

    def make_callbacks():
        return default_callbacks(**ACT)

    _, acted = final_weights(make_model, make_callbacks(), max_steps=4, logger=False, default_root_dir=tmp_path)
    assert ("skip_step", 1) in [(i["action"], i["step"]) for i in acted]  # the control: a real run acts
    assert_no_action(make_model, make_callbacks, fast_dev_run=4, default_root_dir=tmp_path)


def test_the_sanity_check_takes_no_action_and_judges_nothing(tmp_path):
    # No training batch at all: whatever the suite records or logs comes from the sanity check.
    callbacks = default_callbacks(**ACT)
    L.seed_everything(0, verbose=False)
    model = DigitsMLP()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = L.Trainer(callbacks=list(callbacks), **trainer_kwargs(tmp_path, num_sanity_val_steps=2,
                                                                    limit_train_batches=0))
    trainer.fit(model)
    assert trainer.sanity_checking is False and trainer.global_step == 0
    assert [r for c in callbacks for r in (*c.records()["diagnoses"], *c.records()["interventions"])] == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    judged = [t for t in load_events(trainer.log_dir).Tags()["scalars"] if t.startswith("convergence/")]
    assert judged == []


def test_no_validation_loop_takes_no_action_beyond_warmup(tmp_path):
    callbacks = default_callbacks(**ACT)
    fit(tmp_path, DigitsMLP(val=False), callbacks, num_sanity_val_steps=2, logger=False)
    assert not [i for c in callbacks for i in c.records()["interventions"] if i["action"] != "warmup"]
