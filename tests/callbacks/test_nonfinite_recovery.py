"""Non-finite gradients after finite steps are a divergence: with an acting PlateauAdvisor they
are rolled back and the LR cut, instead of stopping the run; non-finite from the first step (a
bug no learning rate fixes) still stops it cleanly."""

import json
import os
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_convergence import GradientNormMonitor, PlateauAdvisor
from lightning_convergence.recorder import REPORT_FILENAME
from lightning_convergence.recorder.console import ConvergenceWarning
from tests.helpers.models import DigitsMLP, trainer_kwargs


class LinearRegression(L.LightningModule):
    """Least squares on 64 standard-normal features: SGD diverges above LR ~0.3, to Inf within
    about 20 steps at 10 (each step multiplies the error by about 60)."""

    def __init__(self, lr: float):
        super().__init__()
        self.lr, self.net = lr, nn.Linear(64, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1024, 64, generator=g)
        y = x @ torch.randn(64, generator=g) / 8 + 0.1 * torch.randn(1024, generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)


def _fit(tmp_path, model, **kwargs):
    L.seed_everything(0, verbose=False)
    callbacks = [GradientNormMonitor(auto_remediate=True),
                 PlateauAdvisor(monitor=None, range_test_steps=None, auto_remediate=True)]
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=False, **kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        trainer.fit(model)
    with open(os.path.join(tmp_path, REPORT_FILENAME)) as handle:
        return trainer, json.load(handle)


def test_a_divergence_to_inf_is_rolled_back_and_the_lr_cut_until_it_trains(tmp_path):
    model = LinearRegression(lr=10.0)
    # Windows of 50 steps: the gradients turn Inf (step ~26) long before the first window closes.
    trainer, report = _fit(tmp_path, model, max_epochs=5, log_every_n_steps=50)
    rollbacks = [i for i in report["interventions"] if i["action"] == "rollback"]
    assert rollbacks and all(r["detail"]["to_step"] == 0 for r in rollbacks)  # the first weights
    assert rollbacks[0]["detail"]["found_by"] == "nonfinite_gradients"
    assert not any(i["action"] == "stop" for i in report["interventions"])
    assert trainer.global_step == 160  # the run went on to its end
    assert model.lr * 0.1 ** len(rollbacks) < 0.3 and torch.isfinite(model.net.weight).all()
    assert trainer.callback_metrics["train_loss"] < 0.1  # it learned at the cut rate


def test_nonfinite_from_the_first_step_still_stops_without_a_rollback(tmp_path):
    model = DigitsMLP(nan_at_step=0, nan_steps=1000)
    trainer, report = _fit(tmp_path, model)
    assert [i["action"] for i in report["interventions"]] == ["skip_step"] * 5 + ["stop"]
    assert trainer.global_step == 5


def test_nonfinite_that_persists_after_rollbacks_stops_after_max_recoveries(tmp_path):
    model = LinearRegression(lr=1e6)  # still far too high after three tenfold cuts
    trainer, report = _fit(tmp_path, model, max_epochs=3, log_every_n_steps=50)
    actions = [i for i in report["interventions"] if i["action"] != "skip_step"]
    assert [i["action"] for i in actions].count("rollback") == 3  # max_recoveries=3
    assert all(i["detail"]["found_by"] == "nonfinite_gradients" for i in actions if i["action"] == "rollback")
    assert actions[-1]["action"] == "stop" and actions[-1]["detail"]["reason"] == "divergence"
    assert trainer.global_step == 50 and torch.isfinite(model.net.weight).all()  # of 96


class UnscaledLinearRegression(LinearRegression):
    """The same least squares on inputs never standardised (scale 300): at LR 1e-4 it overflows
    to Inf within a few steps, a fault of the data that no learning rate should paper over."""

    def train_dataloader(self):
        loader = super().train_dataloader()
        x, y = loader.dataset.tensors
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(300.0 * x, y), batch_size=32, shuffle=True, generator=g)


def test_a_divergence_whose_top_cause_is_the_data_stops_without_a_rollback(tmp_path):
    from lightning_convergence import InputSanityChecker

    L.seed_everything(0, verbose=False)
    callbacks = [InputSanityChecker(), GradientNormMonitor(auto_remediate=True),
                 PlateauAdvisor(monitor=None, range_test_steps=None, auto_remediate=True)]
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=False, log_every_n_steps=50))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        trainer.fit(UnscaledLinearRegression(lr=1e-4))
    with open(os.path.join(tmp_path, REPORT_FILENAME)) as handle:
        report = json.load(handle)
    actions = [i["action"] for i in report["interventions"]]
    assert "rollback" not in actions and actions[-1] == "stop"
    divergence = next(d for d in report["diagnoses"] if d["kind"] == "divergence")
    assert divergence["causes"][0]["cause"] == "unnormalized_inputs"
